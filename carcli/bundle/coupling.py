"""model.json's ``region_coupling``: the learned recombination a bundle (or a recipe) samples
with, so that `predict` draws as `sample` does.

    null                                   # G's draws as drawn (or independent_regions)
    {"file": "coupling.safetensors", "sha256": ...,          # the region coupling head
     "pool": 4,                            # sample.region_pool (absent: 1)
     "pool_critic": 1.0,                   # sample.pool_critic (absent: 0)
     "pool_target": "calibrator",          # sample.pool_target (absent: "pool")
     "critic_file": "discriminator.safetensors", "critic_sha256": ...}  # D, where pool_critic > 0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carcli.artefacts.run import COUPLING, DISCRIMINATOR, sha256_file
from carcli.bundle.model_json import MODEL_JSON
from carcli.errors import CarsegError

COUPLING_FILE = COUPLING
"""The region coupling head in a bundle (sample.region_coupling: learned), named as in the
run's refiner folder."""
CRITIC_FILE = DISCRIMINATOR
"""D in a bundle whose pool is weighted by it (sample.pool_critic > 0), named as in the run's
refiner folder."""


POOL_TARGETS = ("pool", "calibrator")
"""model.json's ``pool_target`` values (sample.pool_target)."""


@dataclass(frozen=True)
class CouplingFiles:
    """The head and (where the pool is weighted by D) D's weights, with the pool's settings."""

    head: Path
    pool: int = 1
    sharpness: float = 0.0
    critic: Path | None = None
    target: str = "pool"


def region_coupling_of(recipe: Any) -> dict[str, Any] | None:
    """model.json's ``region_coupling`` for a recipe (the sha256s filled in by export), or
    None where the recipe samples without the learned recombination."""
    s = recipe.sample
    if s.region_coupling != "learned":
        return None
    out: dict[str, Any] = {"file": COUPLING_FILE}
    if s.region_pool > 1:
        out.update(pool=int(s.region_pool), pool_critic=float(s.pool_critic))
        if s.pool_target != "pool":
            out["pool_target"] = s.pool_target
    if s.pool_critic > 0:
        out["critic_file"] = CRITIC_FILE
    return out


def run_coupling(recipe: Any, refiner_dir: Path) -> CouplingFiles:
    """The files a recipe's learned recombination reads from the run's refiner folder."""
    s = recipe.sample
    critic = refiner_dir / CRITIC_FILE if s.pool_critic > 0 else None
    return CouplingFiles(
        refiner_dir / COUPLING_FILE, s.region_pool, s.pool_critic, critic, s.pool_target
    )


def recipe_coupling(recipe: Any, refiner_dir: Path) -> tuple[dict[str, Any], CouplingFiles]:
    """``region_coupling`` as prediction.json records it for a recipe (paths and sha256s of
    the run's files), and the files to load."""
    value, files = region_coupling_of(recipe), run_coupling(recipe, refiner_dir)
    value.update(file=str(files.head), sha256=sha256_file(files.head))
    if files.critic is not None:
        value.update(critic_file=str(files.critic), critic_sha256=sha256_file(files.critic))
    return value, files


def bundle_coupling(meta: dict[str, Any], folder: Path) -> CouplingFiles | None:
    """The bundle's coupling files, checked against model.json; None without the head."""
    value = meta.get("region_coupling")
    if value is None:
        return None
    where = folder / MODEL_JSON
    ok = isinstance(value, dict) and value.get("file") == COUPLING_FILE
    pool, critic = (value.get("pool", 1), value.get("pool_critic", 0.0)) if ok else (0, 0)
    target = value.get("pool_target", "pool") if ok else None
    ok = ok and target in POOL_TARGETS
    ok = ok and isinstance(pool, int) and pool >= 1 and isinstance(critic, (int, float))
    ok = ok and critic >= 0 and (value.get("critic_file") == CRITIC_FILE) == (critic > 0)
    if not ok:
        raise CarsegError(
            f"{where}: region_coupling must be null or "
            f'{{"file": "{COUPLING_FILE}", "sha256": ..., optional "pool": int >= 1, '
            f'"pool_critic": >= 0 with "critic_file": "{CRITIC_FILE}", "critic_sha256": ..., '
            f'optional "pool_target": one of {", ".join(POOL_TARGETS)}}}, '
            f"got {value!r}",
            hint="re-export the bundle with `carseg export RECIPE`",
        )
    head = _checked(folder / COUPLING_FILE, value.get("sha256"))
    d = _checked(folder / CRITIC_FILE, value.get("critic_sha256")) if critic > 0 else None
    return CouplingFiles(head, pool, float(critic), d, target)


def _checked(path: Path, sha256: Any) -> Path:
    if not path.is_file():
        raise CarsegError(f"{path}: missing from the bundle", hint="export the bundle again")
    if sha256_file(path) != sha256:
        raise CarsegError(
            f"{path}: sha256 does not match model.json's",
            hint="the file was changed or damaged; export the bundle again",
        )
    return path


def coupled_regions(files: CouplingFiles | None, info: Any, make_cmd: str) -> Any:
    """The learned recombination (carcli.sampling.regions.CoupledRegions) the files make,
    None without a head."""
    if files is None:
        return None
    from carcli.runtime.networks import load_coupling, load_network
    from carcli.sampling.regions import CoupledRegions

    head, threshold, link = load_coupling(files.head, info, make_cmd)
    critic = None
    if files.critic is not None:
        critic = load_network(files.critic, "refiner", "discriminator", info, make_cmd).eval()
    return CoupledRegions(head, threshold, link, files.pool, critic, files.sharpness, files.target)
