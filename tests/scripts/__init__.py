"""Programs the tests start as child processes (plain runs and ``torchrun``). Run them as
modules from the repository root, e.g. ``python -m tests.scripts.train_tiny --cache C --out O``
(the tests build the command with :func:`tests.helpers.script_command` and the environment
with :func:`tests.helpers.subprocess_env`)."""
