"""The `carseg` command line. Importing it sets carseg's thread defaults (see
``carcli.threads``) before any command loads torch or numpy."""

from carcli.threads import set_thread_defaults

set_thread_defaults()
