"""The processes of a sharded evaluation: which one this is, and the few messages they exchange.

``smug evaluate`` runs in one process unless ``torchrun`` (torch.distributed's launcher) started it: torchrun sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in every process it starts, one rank per GPU (or per CPU process), on one
node or on several joined by its rendezvous. The ranks then form a torch.distributed process group: gloo on CPU, nccl
when they compute on GPUs (the backend DIRECT's training uses). They exchange only small Python objects (a problem
that stops the run, the finished units, the throughput), never tensors: every rank evaluates its own units.
"""

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Rank 0 waits at the merge for the slowest rank, which may be hours on a long run, not torch's default of minutes. A
# rank that dies does not leave the others waiting this long: torchrun then stops every rank of the run.
WAIT_FOR_RANKS = datetime.timedelta(days=7)
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class PeerStopped(Exception):
    """Another rank stopped the run with a problem it reports itself; this rank exits without repeating it."""


@contextlib.contextmanager
def _peers_may_leave() -> Iterator[None]:
    """A rank that stopped with an error (which it reports) breaks the collective the others wait in: they stop too,
    without a traceback of their own."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed.DistError and the backends' errors
        raise PeerStopped(f"another rank left the run: {e}") from None


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run; one process (rank 0 of 1) without torchrun.

    Parameters
    ----------
    rank, world_size : int
        This process's global rank and the number of processes of the run.
    local_rank, local_world_size : int
        The same on this node (the GPU index this rank computes on).
    node_rank : int
        The node's rank (torchrun's ``GROUP_RANK``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "Ranks":
        """The ranks torchrun set in the environment; one process when it set none.

        Raises
        ------
        ValueError
            A variable is not a whole number, or the ranks do not fit the world size.
        """
        if not any(name in environ for name in TORCHRUN_VARIABLES):
            return cls()
        values = {}
        names = {**dict.fromkeys(TORCHRUN_VARIABLES, None), "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0"}
        for name, default in names.items():
            text = environ.get(name, default)
            if text is None or not text.strip().isdigit():
                raise ValueError(
                    f"Environment variable {name}={text!r}: torchrun sets {', '.join(TORCHRUN_VARIABLES)} to whole "
                    "numbers; start smug evaluate with torchrun, or unset them to run one process."
                )
            values[name] = int(text)
        ranks = cls(
            values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"], values["GROUP_RANK"]
        )
        if not (0 <= ranks.rank < ranks.world_size and 0 <= ranks.local_rank < ranks.local_world_size):
            raise ValueError(f"Environment variables give rank {ranks.rank} of a world of {ranks.world_size}.")
        return ranks

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def label(self) -> str:
        """``rank 1/4`` for messages of a sharded run; empty for one process."""
        return f"rank {self.rank}/{self.world_size}" if self.sharded else ""

    def device(self, requested: str) -> str:
        """The device this rank computes on: a bare ``cuda`` is this rank's GPU, ``cuda:LOCAL_RANK``."""
        return f"cuda:{self.local_rank}" if self.sharded and requested == "cuda" else requested

    def default_threads(self) -> int:
        """CPU threads of this rank when --threads is not given: the node's cores shared by its ranks."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def start(self, device: str) -> None:
        """Join the run's process group (no-op for one process), and give DIRECT its node-local group as DIRECT's own
        launcher does, so that DIRECT's set-up (log folders, barriers) works in every rank."""
        if not self.sharded:
            return
        import torch
        import torch.distributed as dist

        from smug_plugin import direct_adapter

        backend = "gloo"
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(torch.device(device))
            backend = "nccl"
        try:
            dist.init_process_group(backend, timeout=WAIT_FOR_RANKS)
        except (RuntimeError, ValueError) as e:  # no rendezvous: wrong address, port taken, a rank missing
            raise ValueError(f"{self.label} cannot join the other ranks ({backend}): {e}") from None
        node_group, _ = dist.new_subgroups(group_size=self.local_world_size)
        direct_adapter.set_local_process_group(node_group)

    def stop(self) -> None:
        """Leave the process group (no-op for one process)."""
        if self.sharded:
            import torch.distributed as dist

            from smug_plugin import direct_adapter

            direct_adapter.set_local_process_group(None)
            if dist.is_initialized():
                dist.destroy_process_group()

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, by rank; waits for every rank."""
        if not self.sharded:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        with _peers_may_leave():
            dist.all_gather_object(values, value)
        return values

    def from_rank0(self, value: Any) -> Any:
        """Rank 0's ``value`` in every rank."""
        if not self.sharded:
            return value
        import torch.distributed as dist

        box = [value]
        with _peers_may_leave():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, problem: str | None) -> None:
        """Go on together, or stop together: every rank gives the problem that stops it (None: none).

        Raises
        ------
        ValueError
            In the first rank with a problem: the problem, to be reported.
        PeerStopped
            In every other rank, when any rank has one.
        """
        problems = self.all_gather(problem)
        first = next((rank for rank, p in enumerate(problems) if p is not None), None)
        if first == self.rank:
            raise ValueError(problem)
        if first is not None:
            raise PeerStopped(f"rank {first} stopped the run")
