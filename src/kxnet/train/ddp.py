"""DDP that works inside a Hydra job, in single runs and in multirun sweeps.

Lightning's DDP starts ranks 1 … N−1 by running the parent's command line again. Inside a Hydra
multirun that command line is the whole sweep (``-m model.net.stages=0,5,…``): every child starts
the sweep over, Hydra announces the launch once per rank, and a child serves as rank 1 of every
job of its own sweep, which only works while both processes happen to walk the same sweep in
step (and not when the sweep's jobs differ in devices, or when the first job fails). It also
leaves ``LOCAL_RANK`` and friends in the parent's environment, so the next job of the sweep never
starts ranks of its own.

:class:`HydraDDPStrategy` is Lightning's ``ddp`` (one process per device, started by
``subprocess``, so GPU training is exactly as efficient) whose launcher starts each child as a
*single run of the current job*: the job's config name and overrides (never the sweep's command
line), in run mode, writing into the job's own output folder. :func:`release` ends a job
cleanly: it waits for the ranks the job started, closes the process group and puts the
environment back, so that the next job of a sweep starts its own ranks. Where the cluster starts
the processes (SLURM, torchrun) nothing is launched and only the clean-up applies.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["HydraDDPStrategy", "HydraJobLauncher", "job_command", "release"]

_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_THREAD_ENV = "OMP_NUM_THREADS"
# Hydra settings of the parent that a child run keeps (where configs are found, logging);
# sweep, launcher and run settings are the child's own.
_KEPT_HYDRA_OVERRIDES = (
    "hydra.searchpath",
    "hydra.verbose",
    "hydra/job_logging",
    "hydra/hydra_logging",
    "hydra.job_logging",
    "hydra.hydra_logging",
)
_CHILD_WAIT_S = 300.0


def _quote(value: str) -> str:
    """A Hydra override value that stays one string whatever it holds."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_command(local_rank: int) -> list[str]:
    """The command that runs the current Hydra job once more as rank ``local_rank``."""
    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    if spec is not None:
        command = [sys.executable, "-m", spec.name]
    else:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main":
            where = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
            command += ["--config-path", where]
        elif source.provider == "command-line" and source.schema == "file":
            command += ["--config-dir", source.path]
    command += ["--config-name", hydra_cfg.job.config_name]
    command += list(hydra_cfg.overrides.task)
    command += [
        override
        for override in hydra_cfg.overrides.hydra
        if override.lstrip("+~").startswith(_KEPT_HYDRA_OVERRIDES)
    ]
    command += [
        "hydra.mode=RUN",
        f"hydra.run.dir={_quote(hydra_cfg.runtime.output_dir)}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        f"hydra.job.chdir={hydra_cfg.job.chdir}",
    ]
    return command


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Starts ranks 1 … N−1 with :func:`job_command` inside a Hydra job (Lightning's own
    command elsewhere), and remembers what it changed for :meth:`release`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._saved_env: dict[str, str | None] | None = None
        self._saved_threads = torch.get_num_threads()

    def _call_children_scripts(self) -> None:
        self._saved_env = {key: os.environ.get(key) for key in (*_LAUNCH_ENV, _THREAD_ENV)}
        self._saved_threads = torch.get_num_threads()
        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        self.procs = []
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        cwd = HydraConfig.get().runtime.cwd
        for local_rank in range(1, self.num_processes):
            env = dict(os.environ, LOCAL_RANK=str(local_rank))
            if os.environ.get("PL_GLOBAL_SEED") is None:
                env.pop("PL_GLOBAL_SEED", None)
            command = job_command(local_rank)
            rank_zero_info(f"Starting rank {local_rank}: {' '.join(command)}")
            self.procs.append(subprocess.Popen(command, env=env, cwd=cwd))

    def release(self, wait: bool = True) -> None:
        """Wait for (or, with ``wait=False``, stop) the started ranks; restore the environment."""
        for proc in self.procs:
            try:
                proc.wait(timeout=_CHILD_WAIT_S if wait else 0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            torch.set_num_threads(self._saved_threads)
            self._saved_env = None


class HydraDDPStrategy(DDPStrategy):
    """Lightning's ``ddp`` strategy with :class:`HydraJobLauncher` (see the module docstring).

    Takes every argument of :class:`~lightning.pytorch.strategies.DDPStrategy`; the process-group
    backend defaults to NCCL on GPUs and gloo on CPUs.
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = HydraJobLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )


def release(trainer: Trainer, wait: bool = True) -> None:
    """End a job's distributed run: the ranks it started, its process group, its environment."""
    launcher = trainer.strategy.launcher
    if isinstance(launcher, HydraJobLauncher):
        launcher.release(wait=wait)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
