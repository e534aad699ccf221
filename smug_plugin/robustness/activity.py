"""What this process is computing now, for the progress heartbeat of a long evaluation (`run.progress`).

The evaluation loop sets the unit and the model, the attacks their step; the progress reporter only reads it. It lives
below both (attacks must not import the run machinery), as one module-level object: one evaluation per process.
"""

from dataclasses import dataclass


@dataclass
class Activity:
    """What this process is computing now; the loop sets the unit and model, the attacks their step."""

    condition: str = ""
    model: str = ""
    slices: str = ""
    step: int = 0
    steps: int = 0

    def attack_step(self, step: int, steps: int) -> None:
        self.step, self.steps = step, steps

    def describe(self) -> str:
        step = f", attack step {self.step}/{self.steps}" if self.steps else ""
        return f"{self.condition}: model {self.model}, slices {self.slices}{step}"


ACTIVITY = Activity()
