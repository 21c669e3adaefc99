"""DQN on gymnasium's CartPole-v1: prioritized replay against uniform replay.

    pip install torch==2.13.0            # first: the CPU build (unpinned torch pulls CUDA)
    pip install -e '.[examples]'
    python examples/dqn_cartpole.py      # full run: 2 replay kinds x 3 seeds, about 1-3 min on 2 cores
    python examples/dqn_cartpole.py --smoke   # a few seconds: same code path, tiny budget

Double DQN with a small MLP, a target network and a Huber loss. The only
difference between the two curves is the buffer: ``ReplayBuffer`` (uniform) or
``PrioritizedReplay`` (priorities = |TD error|, importance weights in the loss).
Writes, under ``--out`` (default ``dqn_cartpole_out/``):

* ``learning_curves.png``: return (moving mean of 20 episodes) against
  environment steps, mean over seeds with the min-max band, for both buffers;
* ``dqn_cartpole.log``: settings, one line per run and the summary;
* ``results.json``: every episode's return and end step, per run.

CartPole counts as solved when the mean return of the last 20 training episodes
is at least 195 (the classic CartPole-v0 threshold; v1 caps episodes at 500). A
run trains until it is solved or its step budget (40,000 steps) is spent
(``--set stop_when_solved=false`` spends the whole budget), then plays 10 greedy
episodes with the final network, reported beside the training figure.

Training is done in phases, as in the RL Baselines3 Zoo's CartPole DQN: every 64
environment steps, 64 gradient steps on batches of 64, then the target network
is copied. Runs go in parallel, one process per core, one torch thread each.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SOLVED = 195.0
WINDOW = 20


class Transition(NamedTuple):
    """One environment step as the buffer stores it."""

    obs: np.ndarray
    action: int
    reward: float
    next_obs: np.ndarray
    terminated: bool  # True only at a real end (pole fell); truncation still bootstraps


@dataclass(frozen=True)
class Settings:
    """Hyperparameters of one run (the defaults solve CartPole in about 8-12k steps)."""

    steps: int = 40_000  # budget; a run stops earlier once solved
    buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 1_000
    train_every: int = 64  # env steps between training phases
    gradient_steps: int = 64  # gradient steps per training phase (one per env step on average)
    gamma: float = 0.99
    lr: float = 1e-3
    lr_end: float = 1e-3  # learning rate at the end of the budget (linear schedule; constant by default)
    hidden: int = 256
    target_every: int = 64  # env steps between target-network copies (here: after every training phase)
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_steps: int = 5_000
    # prioritized replay (PERConfig): alpha, beta annealed to 1 over the run
    priority_exponent: float = 0.6
    beta: float = 0.4
    priority_eps: float = 1e-3
    stop_when_solved: bool = True  # end the run once the last 20 episodes average >= 195
    eval_episodes: int = 10  # greedy episodes played by the final network (not trained on)


def smoke_settings() -> Settings:
    return Settings(steps=1_500, learning_starts=256, eps_steps=1_000, hidden=64, eval_episodes=2)


# ---------------------------------------------------------------- one run
def make_buffer(kind: str, settings: Settings, seed: int) -> Any:
    from ReplayTables.PER import PERConfig, PrioritizedReplay
    from ReplayTables.ReplayBuffer import ReplayBuffer

    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return ReplayBuffer(max_size=settings.buffer_size, structure=Transition, rng=rng)
    n_updates = max(1, (settings.steps - settings.learning_starts) // settings.train_every * settings.gradient_steps)
    config = PERConfig(priority_exponent=settings.priority_exponent, beta=settings.beta, beta_final=1.0,
                       beta_steps=n_updates)
    return PrioritizedReplay(max_size=settings.buffer_size, structure=Transition, rng=rng, config=config)


def run(kind: str, seed: int, settings: Settings, progress: Any = None) -> dict[str, Any]:
    """Train one agent; returns its episode returns and the steps at which they ended."""
    import gymnasium as gym
    import torch
    from torch import nn

    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    n_obs = env.observation_space.shape[0]
    n_actions = int(env.action_space.n)
    env.action_space.seed(seed)

    def mlp() -> nn.Module:
        h = settings.hidden
        return nn.Sequential(nn.Linear(n_obs, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, n_actions))

    q_net, target_net = mlp(), mlp()
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=settings.lr)
    buffer = make_buffer(kind, settings, seed)
    prioritized = kind == "per"
    rng = np.random.default_rng(seed + 10_000)

    returns: list[float] = []
    ends: list[int] = []
    losses: list[float] = []
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    t0 = time.perf_counter()
    for step in range(1, settings.steps + 1):
        frac = min(1.0, step / settings.eps_steps)
        eps = settings.eps_start + frac * (settings.eps_end - settings.eps_start)
        if rng.random() < eps:
            action = int(rng.integers(n_actions))
        else:
            with torch.inference_mode():
                action = int(q_net(torch.from_numpy(obs)).argmax())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(Transition(obs, action, float(reward), next_obs, bool(terminated)))
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            ends.append(step)
            episode_return = 0.0
            obs, _ = env.reset()
            if settings.stop_when_solved and len(returns) >= WINDOW and np.mean(returns[-WINDOW:]) >= SOLVED:
                break

        if step >= settings.learning_starts and step % settings.train_every == 0:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr + (settings.lr_end - settings.lr) * step / settings.steps
            for _ in range(settings.gradient_steps):
                loss = train_step(buffer, q_net, target_net, optimizer, settings, prioritized)
            if step % 1000 < settings.train_every:
                losses.append(loss)

        if step % settings.target_every == 0:
            target_net.load_state_dict(q_net.state_dict())
        if progress is not None and step % 500 == 0:
            progress(500)
    if progress is not None and step % 500:
        progress(step % 500)
    if progress is not None and step < settings.steps:
        progress(settings.steps - step)  # the unused budget, so the bar ends full
    seconds = time.perf_counter() - t0
    greedy = evaluate(env, q_net, settings.eval_episodes, seed + 20_000)
    env.close()
    last = float(np.mean(returns[-WINDOW:])) if returns else 0.0
    return {"kind": kind, "seed": seed, "returns": returns, "ends": ends, "losses": losses,
            "last20": last, "solved": last >= SOLVED, "episodes": len(returns),
            "first_solved_step": first_solved_step(returns, ends),
            "steps": step, "seconds": seconds, "greedy_returns": greedy,
            "buffer_stats": _jsonable(buffer.stats())}


def evaluate(env: Any, q_net: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` greedy episodes (no exploration, no training)."""
    import torch

    out = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            with torch.inference_mode():
                action = int(q_net(torch.from_numpy(obs)).argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return out


def train_step(buffer: Any, q_net: Any, target_net: Any, optimizer: Any, settings: Settings,
               prioritized: bool) -> float:
    """One double-DQN gradient step on a sampled batch; PER gets |TD| back as priorities."""
    import torch
    from torch import nn

    batch = buffer.sample(settings.batch_size)
    tb = batch.to_torch()  # zero-copy tensors over the sampled arrays
    q = q_net(tb.obs).gather(1, tb.action.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        best = q_net(tb.next_obs).argmax(1, keepdim=True)  # double DQN: the online net picks,
        q_next = target_net(tb.next_obs).gather(1, best).squeeze(1)  # the target net values
        alive = (~tb.terminated).float()  # truncated episodes still bootstrap
        target = tb.reward.float() + settings.gamma * alive * q_next
    loss_each = nn.functional.smooth_l1_loss(q, target, reduction="none")
    loss = (tb.weights.float() * loss_each).mean()  # importance weights (ones for uniform)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
    optimizer.step()
    if prioritized:
        td = (target - q).detach().abs().numpy()
        buffer.update_priorities(batch.ids, td + settings.priority_eps)
    return float(loss.detach())


def first_solved_step(returns: list[float], ends: list[int]) -> int | None:
    """The env step at which the mean of the last 20 episodes first reached 195."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < WINDOW:
        return None
    means = np.convolve(r, np.ones(WINDOW) / WINDOW, mode="valid")
    hit = np.flatnonzero(means >= SOLVED)
    return int(ends[hit[0] + WINDOW - 1]) if hit.size else None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()}


# ---------------------------------------------------------------- workers
_QUEUE: Any = None


def _init_worker(queue: Any, threads: int) -> None:
    import torch

    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(threads)


def _run_task(task: tuple[str, int, Settings]) -> dict[str, Any]:
    kind, seed, settings = task
    return run(kind, seed, settings, progress=_QUEUE.put)


def run_all(tasks: list[tuple[str, int, Settings]], workers: int, total_steps: int) -> list[dict[str, Any]]:
    """Run every (buffer kind, seed) with a progress bar over all environment steps."""
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    bar = tqdm(total=total_steps, unit="step", desc="DQN CartPole", dynamic_ncols=True, mininterval=0.5)
    if workers <= 1:
        import torch

        torch.set_num_threads(1)  # a 128-unit MLP is fastest on one thread
        for task in tasks:
            results.append(run(*task, progress=bar.update))
            bar.set_postfix_str(_postfix(results))
        bar.close()
        return results
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after importing torch can deadlock its thread pools
    queue = ctx.Queue()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(queue, 1)) as pool:
        pending = pool.imap_unordered(_run_task, tasks)
        done = 0
        while done < len(tasks):
            while not queue.empty():
                bar.update(queue.get())
            try:
                results.append(pending.next(timeout=0.2))
                done += 1
                bar.set_postfix_str(_postfix(results))
            except mp.TimeoutError:
                pass
        while not queue.empty():
            bar.update(queue.get())
    bar.close()
    return results


def _postfix(results: list[dict[str, Any]]) -> str:
    return " ".join(f"{r['kind']}/{r['seed']}:{r['last20']:.0f}" for r in results[-4:])


# ---------------------------------------------------------------- output
def plot(results: list[dict[str, Any]], steps: int, path: Path) -> None:
    """Moving-mean return against env steps: one line per run, a dot where a run was solved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last_end = max((r["ends"][-1] for r in results if r["ends"]), default=steps)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for kind, label, color in (("per", "PrioritizedReplay", "tab:red"), ("uniform", "ReplayBuffer (uniform)",
                                                                         "tab:blue")):
        runs = [r for r in results if r["kind"] == kind and r["returns"]]
        for i, r in enumerate(sorted(runs, key=lambda r: r["seed"])):
            ret = np.asarray(r["returns"], dtype=np.float64)
            smooth = np.array([ret[max(0, k - WINDOW + 1):k + 1].mean() for k in range(ret.size)])
            ends = np.asarray(r["ends"], dtype=np.float64)
            n = len(runs)
            ax.plot(ends, smooth, color=color, linewidth=1.2, alpha=0.85,
                    label=f"{label} ({n} seed{'s' if n > 1 else ''})" if i == 0 else None)
            if r["solved"]:
                ax.plot(ends[-1], smooth[-1], marker="o", color=color, markersize=5)
    ax.axhline(SOLVED, color="gray", linestyle="--", linewidth=1, label=f"solved ({SOLVED:.0f})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"training return (mean of last {WINDOW} episodes)")
    ax.set_title("DQN on CartPole-v1: prioritized vs uniform replay (dot: run solved)")
    ax.set_xlim(0, last_end * 1.03)
    ax.set_ylim(0, max(260.0, *(max(r["returns"][-WINDOW:], default=0) for r in results)) + 20)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summarize(results: list[dict[str, Any]], log: logging.Logger) -> bool:
    all_solved = True
    for kind in ("per", "uniform"):
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["seed"])
        if not rs:
            continue
        for r in rs:
            greedy = float(np.mean(r["greedy_returns"])) if r["greedy_returns"] else float("nan")
            log.info("%-7s seed %d: last-%d mean %6.1f (%s) after %6d steps, %4d episodes, %5.1f s; "
                     "greedy policy %.1f over %d episodes", kind, r["seed"], WINDOW, r["last20"],
                     "solved" if r["solved"] else "NOT solved", r["steps"], r["episodes"], r["seconds"],
                     greedy, len(r["greedy_returns"]))
        last = [r["last20"] for r in rs]
        log.info("%-7s mean over %d seeds of the last-%d mean return: %.1f (min %.1f)", kind, len(rs), WINDOW,
                 float(np.mean(last)), float(np.min(last)))
        all_solved &= all(r["solved"] for r in rs)
    return all_solved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per buffer kind (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ... (default 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="environment-step budget per run (default 40000; a run stops once solved)")
    p.add_argument("--kinds", nargs="+", default=["per", "uniform"], choices=["per", "uniform"])
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs in parallel, one torch thread each (default: up to 2)")
    p.add_argument("--out", type=Path, default=Path("dqn_cartpole_out"), help="output folder")
    p.add_argument("--smoke", action="store_true",
                   help="CI: 1 seed, 1,500 steps, one process; checks the code path, not learning")
    p.add_argument("--check", action="store_true", help="exit 1 unless every run is solved")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override a hyperparameter, e.g. --set lr=5e-4 hidden=64")
    args = p.parse_args(argv)

    settings = smoke_settings() if args.smoke else Settings()
    overrides: dict[str, Any] = {} if args.steps is None else {"steps": args.steps}
    defaults = asdict(settings)
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in defaults:
            p.error(f"--set {item}: unknown hyperparameter {name!r}; known: {', '.join(defaults)}")
        kind = type(defaults[name])
        if kind is bool:
            overrides[name] = value.lower() in ("1", "true", "yes", "on")
        else:
            overrides[name] = kind(float(value)) if kind is int else kind(value)
    settings = Settings(**{**defaults, **overrides})
    seeds = 1 if args.smoke else args.seeds
    workers = 1 if args.smoke else args.workers
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "dqn_cartpole.log"
    log = logging.getLogger("dqn_cartpole")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    for handler in (logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stdout)):
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.info("DQN CartPole-v1: buffers %s, %d seed(s), %d steps per run, %d worker(s)%s", args.kinds, seeds,
             settings.steps, workers, " [smoke]" if args.smoke else "")
    log.info("settings: %s", json.dumps(asdict(settings)))

    tasks = [(kind, seed, settings) for seed in range(args.first_seed, args.first_seed + seeds)
             for kind in args.kinds]
    t0 = time.perf_counter()
    results = run_all(tasks, workers, settings.steps * len(tasks))
    elapsed = time.perf_counter() - t0
    all_solved = summarize(results, log)
    png = args.out / "learning_curves.png"
    plot(results, settings.steps, png)
    (args.out / "results.json").write_text(json.dumps({"settings": asdict(settings), "runs": results}))
    log.info("training wall time %.1f s; wrote %s, %s and %s", elapsed, png, log_path, args.out / "results.json")
    log.info("every run solved (last-%d mean >= %.0f): %s", WINDOW, SOLVED, "yes" if all_solved else "no")
    for handler in log.handlers:
        handler.close()
    return 1 if args.check and not all_solved else 0


if __name__ == "__main__":
    sys.exit(main())
