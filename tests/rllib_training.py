"""What the RLlib DQN tests of both stacks share: training until the return reaches a goal."""
from __future__ import annotations

from typing import Any

#: The mean episode return the DQN tests must reach: nearly 3x a random CartPole policy's ~22.
RETURN_GOAL = 60.0
#: Training iterations allowed to reach it (of 500 env steps each).
MAX_ITERATIONS = 20


def train_until_return(algo: Any, goal: float = RETURN_GOAL,
                       max_iterations: int = MAX_ITERATIONS) -> tuple[list[float], dict[str, Any]]:
    """Mean episode return after each iteration, stopping once it reaches ``goal``."""
    returns: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(max_iterations):
        result = algo.train()
        returns.append(float(result["env_runners"]["episode_return_mean"]))
        if returns[-1] >= goal:
            break
    return returns, result
