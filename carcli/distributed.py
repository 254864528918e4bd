"""Several processes under `torchrun`: who am I, the process group, and the few collectives
the stages use. One process (no WORLD_SIZE, or WORLD_SIZE=1) needs none of it: every helper
here is then a no-op, so the single-process code path is unchanged.

Design (docs/guide.md, "Scaling out"):
* `batch_size` is the GLOBAL batch. Every rank draws the same global index set from the
  shared seeded generator and keeps rows `rank::world`, so the data stream does not depend
  on the world size, and a run resumed with another world size continues the same stream.
* Gradients are averaged over ranks (DDP for the calibrator; one flat all-reduce per network
  for the refiner, whose GAN step takes each network's gradient with `torch.autograd.grad`,
  which DDP's hooks do not see).
* Rank 0 alone writes checkpoints, logs, manifests and the assembled bank; the others wait.
* Every collective has the recipe's `distributed.timeout_s`, and a rank-0 failure in the set-up
  checks is broadcast, so an error on one rank does not hang the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from carcli.errors import CarsegError

if TYPE_CHECKING:
    import torch

    from carcli.recipe.schema import Recipe

T = TypeVar("T")
RANK_STRIDE = 1_000_003  # seeds of rank r: base + r * RANK_STRIDE (rank 0 keeps the base seed)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 and self.backend is not None

    def describe(self, batch_size: int | None = None) -> dict[str, Any]:
        """What the manifest records about the job."""
        out: dict[str, Any] = {"world_size": self.world, "backend": self.backend or "none"}
        if batch_size is not None:
            out["batch_size_global"] = batch_size
            out["batch_size_per_rank"] = batch_size // self.world
        return out


_current = Dist()
_control: Any = None  # a gloo group for barriers and small objects when the backend is nccl


def current() -> Dist:
    return _current


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CarsegError(
            "WORLD_SIZE / RANK / LOCAL_RANK are not integers",
            hint="start several processes with `torchrun --nproc-per-node N -m carcli ...`",
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise CarsegError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return rank, world, local


def rank_seed(base: int, rank: int, step: int = 0) -> int:
    """Seed of a per-rank generator: rank 0 at step 0 keeps `base` (single-process results
    are unchanged); others differ by rank and, after a resume, by the resume step."""
    return (base + rank * RANK_STRIDE + step * 7919) % (2**63)


def resolve_backend(recipe: Recipe, cuda: bool) -> str:
    want = recipe.distributed.backend
    if want == "auto":
        return "nccl" if cuda else "gloo"
    if want == "nccl" and not cuda:
        raise CarsegError(
            "distributed.backend -> nccl needs CUDA devices", hint="use auto or gloo on CPUs"
        )
    return want


@contextlib.contextmanager
def session(recipe: Recipe) -> Iterator[Dist]:
    """The process group for one stage under torchrun (nothing for one process).

    Initialises the default group (nccl on CUDA, gloo otherwise) with the recipe's timeout,
    selects cuda:LOCAL_RANK, and destroys the group at the end. Re-entrant: inside an
    already initialised group it only reports it.
    """
    global _current, _control
    rank, world, local = env_world()
    if world == 1:
        yield Dist()
        return
    import torch
    import torch.distributed as tdist

    if tdist.is_initialized():
        yield _current
        return
    cuda = torch.cuda.is_available() and recipe.device in ("auto", "cuda")
    backend = resolve_backend(recipe, cuda)
    if cuda:
        torch.cuda.set_device(local)
    timeout = datetime.timedelta(seconds=recipe.distributed.timeout_s)
    tdist.init_process_group(backend=backend, timeout=timeout)
    _current = Dist(rank, world, local, backend)
    _control = tdist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    try:
        yield _current
        # every rank leaves together: a rank that tore the group down while another was
        # still in its last collective could abort that rank (SIGABRT seen once in CI)
        barrier()
    finally:
        _current, _control = Dist(), None
        tdist.destroy_process_group()


def barrier() -> None:
    if _current.active:
        import torch.distributed as tdist

        tdist.barrier(group=_control)


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (small picklable objects only)."""
    if not _current.active:
        return value
    import torch.distributed as tdist

    box = [value]
    tdist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def from_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only (its checks, its lock); every rank gets the result. When `fn`
    fails on rank 0 the failure is broadcast and every rank stops with its message."""
    if not _current.active:
        return fn()
    if _current.main:
        try:
            result = fn()
        except BaseException as exc:
            broadcast_from_main(("error", str(exc) or type(exc).__name__))
            raise
        broadcast_from_main(("ok", result))
        return result
    kind, value = broadcast_from_main(None)
    if kind == "error":
        raise CarsegError(f"rank 0 stopped: {value}")
    return value


def report_main_failure(exc: BaseException) -> None:
    """Rank 0 failed before its `from_main` call: tell the waiting ranks (they stop too)."""
    if _current.active and _current.main:
        broadcast_from_main(("error", str(exc) or type(exc).__name__))


def check_batch(batch_size: int, key: str) -> None:
    """The global batch must split evenly over the ranks (equal shards, exact mean)."""
    world = _current.world
    if batch_size % world:
        raise CarsegError(
            f"{key} {batch_size} (the global batch) does not split evenly over {world} ranks",
            hint=f"set {key} to a multiple of {world}",
        )


def shard(batch: T) -> T:
    """This rank's rows `rank::world` of a batch dataclass of tensors (None fields kept)."""
    if _current.world == 1:
        return batch
    r, w = _current.rank, _current.world
    return dataclasses.replace(  # type: ignore[type-var]
        batch,
        **{
            f.name: getattr(batch, f.name)[r::w]
            for f in dataclasses.fields(batch)  # type: ignore[arg-type]
            if getattr(batch, f.name) is not None
        },
    )


def _device() -> Any:
    import torch

    if _current.backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_figures(figures: dict[str, float]) -> dict[str, float]:
    """The mean of each figure over the ranks (every rank must pass the same keys)."""
    if not _current.active or not figures:
        return figures
    import torch
    import torch.distributed as tdist

    keys = sorted(figures)
    values = torch.tensor([float(figures[k]) for k in keys], dtype=torch.float64)
    values = values.to(_device())
    tdist.all_reduce(values)
    values = (values / _current.world).cpu().tolist()
    return {**figures, **dict(zip(keys, values, strict=True))}


def global_mean(value: float) -> float:
    """The mean of one number over the ranks (e.g. D's accuracy, for a shared decision)."""
    return mean_figures({"v": value})["v"] if _current.active else value


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the `.grad` of `params` over the ranks: one flat all-reduce (as StyleGAN2-ADA
    does for the same reason: its losses take gradients with `torch.autograd.grad`).
    Parameters without a gradient (structurally the same on every rank) are left alone."""
    if not _current.active:
        return
    import torch
    import torch.distributed as tdist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= _current.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view(g.shape))
        offset += n


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (identical starting weights)."""
    if not _current.active:
        return
    import torch
    import torch.distributed as tdist

    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            tdist.broadcast(t.data, src=0)


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value` (one small all-reduce over the control group, on
    the CPU, so no GPU stream waits for it); `value` itself with one process. Every rank must
    call it at the same point (the training loop: once per step, for a stop request)."""
    if not _current.active:
        return value
    import torch
    import torch.distributed as tdist

    box = torch.tensor([int(value)], dtype=torch.int64)
    if _control is None and _current.backend == "nccl":  # pragma: no cover - it always has one
        box = box.to(_device())
    tdist.all_reduce(box, op=tdist.ReduceOp.MAX, group=_control)
    return int(box.item())
