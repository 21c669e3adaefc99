"""DQN on gymnasium's CartPole-v1: prioritized replay against uniform replay.

    pip install torch==2.13.0            # first: the CPU build (unpinned torch pulls CUDA)
    pip install -e '.[examples]'
    python examples/dqn_cartpole.py      # full run: 2 replay kinds x 3 seeds, ~6.5 min on 2 CPU cores
    python examples/dqn_cartpole.py --smoke   # seconds: same code path, tiny budget

Double DQN with a small MLP, a target network and a Huber loss. The only
difference between the two curves is the buffer: ``ReplayBuffer`` (uniform) or
``PrioritizedReplay`` (priorities = |TD error|, importance weights in the loss).

Every run spends its whole step budget (no early stop), and every ``eval_every``
steps the greedy policy (no exploration) plays ``eval_episodes`` episodes on a
separate environment. At the end the final network plays ``final_episodes``
(100) greedy episodes: gymnasium defines CartPole-v1 as solved when the mean
return over 100 consecutive episodes is at least 475 (its ``reward_threshold``;
episodes are cut at 500), and a run is reported as solved only by that test of
its final network.

Writes, under ``--out`` (default ``dqn_cartpole_out/``):

* ``learning_curves.png``: for each buffer, the mean over seeds with a shaded
  min-max band over seeds, of (left) the greedy evaluation return and (right) the
  training return (mean of the last 20 episodes), against environment steps;
* ``dqn_cartpole.log``: settings, one line per run and the summary;
* ``results.json``: every episode's return and end step, every evaluation, per run.

Training is done in phases, as in the RL Baselines3 Zoo's CartPole DQN: every
``train_every`` environment steps, ``gradient_steps`` gradient steps on batches of
64, with the target network copied before each phase. The learning rate decays
linearly to ``lr_end`` over the budget, which keeps the final network from
drifting away from a good policy. Runs go in parallel, one process per core, one
torch thread each.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: gymnasium's ``reward_threshold`` for CartPole-v1, over ``SOLVED_EPISODES`` consecutive episodes
SOLVED = 475.0
SOLVED_EPISODES = 100
WINDOW = 20  # training-return curve: mean of the last WINDOW episodes
PROGRESS_EVERY = 250  # environment steps between progress-bar updates

#: module -> the extra that installs it (the demo's dependencies beyond numpy)
DEMO_MODULES = {"torch": "examples", "gymnasium": "examples", "matplotlib": "examples", "tqdm": "examples"}


class Transition(NamedTuple):
    """One environment step as the buffer stores it."""

    obs: np.ndarray
    action: int
    reward: float
    next_obs: np.ndarray
    terminated: bool  # True only at a real end (pole fell); truncation still bootstraps


@dataclass(frozen=True)
class Settings:
    """Hyperparameters of one run."""

    steps: int = 50_000  # environment steps per run, always spent in full
    buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 1_000
    train_every: int = 256  # env steps between training phases
    gradient_steps: int = 128  # gradient steps per training phase
    gamma: float = 0.99
    lr: float = 2.3e-3
    lr_end: float = 1e-4  # learning rate at the end of the budget (linear schedule)
    hidden: int = 256
    eps_start: float = 1.0
    eps_end: float = 0.04
    eps_steps: int = 8_000
    # prioritized replay (PERConfig): alpha, beta annealed to 1 over the run
    priority_exponent: float = 0.6
    beta: float = 0.4
    priority_eps: float = 1e-3
    eval_every: int = 2_500  # env steps between greedy evaluations
    eval_episodes: int = 5  # greedy episodes per evaluation during training
    final_episodes: int = SOLVED_EPISODES  # greedy episodes played by the final network


def smoke_settings() -> Settings:
    return Settings(steps=1_500, learning_starts=256, train_every=64, gradient_steps=32, eps_steps=1_000,
                    hidden=64, eval_every=500, eval_episodes=2, final_episodes=2)


# ---------------------------------------------------------------- dependencies
def require_demo_modules(modules: Sequence[str] = tuple(DEMO_MODULES)) -> None:
    """Import each module the demo needs, or raise a ConfigError naming the extra that installs it."""
    from ReplayTables.optional import require

    for name in modules:
        require(name, DEMO_MODULES[name], "examples/dqn_cartpole.py")


# ---------------------------------------------------------------- pure helpers (tested without torch)
def linear(start: float, end: float, frac: float) -> float:
    """``start`` moved linearly towards ``end``; ``frac`` is clipped to [0, 1]."""
    return start + min(1.0, max(0.0, frac)) * (end - start)


def is_solved(returns: Sequence[float]) -> bool:
    """Gymnasium's test for CartPole-v1: the mean of the last 100 consecutive episodes is >= 475."""
    if len(returns) < SOLVED_EPISODES:
        return False
    return float(np.mean(np.asarray(returns[-SOLVED_EPISODES:], dtype=np.float64))) >= SOLVED


def eval_steps(steps: int, every: int) -> list[int]:
    """The environment steps after which a greedy evaluation runs (the last step always)."""
    marks = list(range(every, steps, every)) if every > 0 else []
    return [*marks, steps]


def training_curve(returns: Sequence[float], ends: Sequence[int], grid: np.ndarray,
                   window: int = WINDOW) -> np.ndarray:
    """At each step of ``grid``, the mean return of the last ``window`` episodes ended by then (NaN before any)."""
    r = np.asarray(returns, dtype=np.float64)
    e = np.asarray(ends, dtype=np.int64)
    done = np.searchsorted(e, grid, side="right")  # episodes finished at or before each grid step
    csum = np.concatenate([[0.0], np.cumsum(r)])
    lo = np.maximum(0, done - window)
    out = np.full(grid.shape, np.nan)
    has = done > 0
    out[has] = (csum[done[has]] - csum[lo[has]]) / (done[has] - lo[has])
    return out


def mean_band(curves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, minimum and maximum over runs at each point (points where a run has no value are skipped)."""
    stack = np.vstack([np.asarray(c, dtype=np.float64) for c in curves])
    out = np.full((3, stack.shape[1]), np.nan)
    ok = ~np.isnan(stack).all(axis=0)
    out[0, ok] = np.nanmean(stack[:, ok], axis=0)
    out[1, ok] = np.nanmin(stack[:, ok], axis=0)
    out[2, ok] = np.nanmax(stack[:, ok], axis=0)
    return out[0], out[1], out[2]


def parse_overrides(items: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``NAME=VALUE`` strings as typed overrides of ``defaults`` (KeyError naming an unknown name)."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in defaults:
            raise KeyError(name)
        kind = type(defaults[name])
        if kind is bool:
            out[name] = value.lower() in ("1", "true", "yes", "on")
        else:
            out[name] = kind(float(value)) if kind is int else kind(value)
    return out


# ---------------------------------------------------------------- one run
def make_buffer(kind: str, settings: Settings, seed: int) -> Any:
    from ReplayTables import PERConfig, PrioritizedReplay, ReplayBuffer

    if kind == "uniform":
        return ReplayBuffer(max_size=settings.buffer_size, structure=Transition, rng=seed)
    n_phases = max(1, (settings.steps - settings.learning_starts) // settings.train_every)
    config = PERConfig(priority_exponent=settings.priority_exponent, beta=settings.beta, beta_final=1.0,
                       beta_steps=n_phases * settings.gradient_steps)
    return PrioritizedReplay(max_size=settings.buffer_size, structure=Transition, rng=seed, config=config)


def run(kind: str, seed: int, settings: Settings, progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Train one agent for the whole budget; returns its training episodes and greedy evaluations."""
    import gymnasium as gym
    import torch
    from torch import nn

    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    eval_env = gym.make("CartPole-v1")
    n_obs = env.observation_space.shape[0]
    n_actions = int(env.action_space.n)

    def mlp() -> nn.Module:
        h = settings.hidden
        return nn.Sequential(nn.Linear(n_obs, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, n_actions))

    q_net, target_net = mlp(), mlp()
    target_net.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=settings.lr)
    buffer = make_buffer(kind, settings, seed)
    prioritized = kind == "per"
    rng = np.random.default_rng(seed + 10_000)
    evals_at = set(eval_steps(settings.steps, settings.eval_every))

    returns: list[float] = []
    ends: list[int] = []
    losses: list[float] = []
    evaluations: list[dict[str, Any]] = []
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    t0 = time.perf_counter()
    for step in range(1, settings.steps + 1):
        eps = linear(settings.eps_start, settings.eps_end, step / settings.eps_steps)
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

        if step >= settings.learning_starts and step % settings.train_every == 0:
            target_net.load_state_dict(q_net.state_dict())
            lr = linear(settings.lr, settings.lr_end, step / settings.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for _ in range(settings.gradient_steps):
                loss = train_step(buffer, q_net, target_net, optimizer, settings, prioritized)
            losses.append(loss)

        if step in evals_at:
            # fixed evaluation seeds: every run and every evaluation sees the same starts
            greedy = evaluate(eval_env, q_net, settings.eval_episodes, 1_000_000)
            evaluations.append({"step": step, "returns": greedy, "mean": float(np.mean(greedy))})
        if progress is not None and step % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None and settings.steps % PROGRESS_EVERY:
        progress(settings.steps % PROGRESS_EVERY)
    seconds = time.perf_counter() - t0
    final = evaluate(eval_env, q_net, settings.final_episodes, 2_000_000)
    env.close()
    eval_env.close()
    return {"kind": kind, "seed": seed, "returns": returns, "ends": ends, "losses": losses,
            "evaluations": evaluations, "episodes": len(returns), "steps": settings.steps,
            "seconds": seconds, "greedy_returns": final, "greedy_mean": float(np.mean(final)),
            "solved": is_solved(final), "buffer_stats": _jsonable(buffer.stats())}


def evaluate(env: Any, q_net: Any, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` greedy episodes (no exploration, no training), seeds ``seed, seed+1, ...``."""
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
    loss_each = nn.functional.smooth_l1_loss(q, target, reduction="none")  # Huber
    loss = (tb.weights.float() * loss_each).mean()  # importance weights (ones for uniform)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
    optimizer.step()
    if prioritized:
        td = (target - q).detach().abs().numpy()
        buffer.update_priorities(batch.ids, td + settings.priority_eps)
    return float(loss.detach())


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


class Progress:
    """A tqdm bar over every environment step of every run.

    Each run spends its whole budget, so ``total`` is exact. The clock starts at the
    first report, not at creation, so the start-up of the worker processes (imports,
    compiling the kernels) does not make the first estimate of the remaining time wrong.
    """

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", desc="DQN CartPole", dynamic_ncols=True, mininterval=0.5,
                        smoothing=0.05)
        self.started = False

    def update(self, n: int) -> None:
        if not self.started:
            self.bar.reset(total=self.bar.total)  # restart the clock now that work is flowing
            self.started = True
        self.bar.update(n)

    def postfix(self, results: list[dict[str, Any]]) -> None:
        self.bar.set_postfix_str(" ".join(f"{r['kind']}/{r['seed']}:{r['greedy_mean']:.0f}" for r in results[-4:]))

    def close(self) -> None:
        self.bar.close()


def run_all(tasks: list[tuple[str, int, Settings]], workers: int) -> list[dict[str, Any]]:
    """Run every (buffer kind, seed) with one progress bar over all their environment steps."""
    results: list[dict[str, Any]] = []
    bar = Progress(sum(t[2].steps for t in tasks))
    if workers <= 1:
        import torch

        torch.set_num_threads(1)  # a small MLP is fastest on one thread
        for task in tasks:
            results.append(run(*task, progress=bar.update))
            bar.postfix(results)
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
                bar.postfix(results)
            except mp.TimeoutError:
                pass
        while not queue.empty():
            bar.update(queue.get())
    bar.close()
    return results


# ---------------------------------------------------------------- output
KINDS = (("per", "PrioritizedReplay", "tab:red"), ("uniform", "ReplayBuffer (uniform)", "tab:blue"))


def plot(results: list[dict[str, Any]], steps: int, path: Path) -> None:
    """Mean over seeds with a shaded min-max band: greedy evaluations (left), training return (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, steps, 201)[1:]
    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    for kind, label, color in KINDS:
        runs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["seed"])
        if not runs:
            continue
        n = len(runs)
        name = f"{label}, {n} seed{'s' if n > 1 else ''}"
        x = np.array([e["step"] for e in runs[0]["evaluations"]], dtype=np.float64)
        mean, lo, hi = mean_band([np.array([e["mean"] for e in r["evaluations"]]) for r in runs])
        ax_eval.plot(x, mean, color=color, linewidth=1.6, marker="o", markersize=3, label=name)
        ax_eval.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
        mean, lo, hi = mean_band([training_curve(r["returns"], r["ends"], grid) for r in runs])
        ax_train.plot(grid, mean, color=color, linewidth=1.6, label=name)
        ax_train.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
    episodes = results[0]["evaluations"][0]["returns"] if results and results[0]["evaluations"] else []
    ax_eval.set_title(f"greedy policy (mean return of {len(episodes)} evaluation episodes)")
    ax_train.set_title(f"training (mean return of the last {WINDOW} episodes, with exploration)")
    ax_eval.set_ylabel("return")
    for ax in (ax_eval, ax_train):
        ax.axhline(SOLVED, color="gray", linestyle="--", linewidth=1, label=f"v1 threshold ({SOLVED:.0f})")
        ax.set_xlabel("environment steps")
        ax.set_xlim(0, steps)
        ax.set_ylim(0, 520)
        ax.grid(alpha=0.3)
    ax_eval.legend(loc="lower right", fontsize=8)
    fig.suptitle("DQN on CartPole-v1: prioritized vs uniform replay (line: mean over seeds; band: min to max)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summarize(results: list[dict[str, Any]], log: logging.Logger) -> bool:
    """Log one line per run and one per buffer kind; True when every run is solved."""
    all_solved = True
    for kind, _, _ in KINDS:
        rs = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["seed"])
        if not rs:
            continue
        for r in rs:
            g = np.asarray(r["greedy_returns"], dtype=np.float64)
            log.info("%-7s seed %d: final greedy return %.1f +/- %.1f (min %.0f) over %d episodes (%s); "
                     "%d training episodes in %d steps, %.1f s", kind, r["seed"], g.mean(), g.std(), g.min(),
                     g.size, "solved" if r["solved"] else "NOT solved", r["episodes"], r["steps"], r["seconds"])
        means = np.array([r["greedy_mean"] for r in rs])
        log.info("%-7s over %d seeds: final greedy return mean %.1f, min %.1f, max %.1f; solved %d of %d",
                 kind, len(rs), means.mean(), means.min(), means.max(), sum(r["solved"] for r in rs), len(rs))
        all_solved &= all(r["solved"] for r in rs)
    return all_solved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per buffer kind (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ... (default 0)")
    p.add_argument("--steps", type=int, default=None, help="environment steps per run (default 50000)")
    p.add_argument("--kinds", nargs="+", default=["per", "uniform"], choices=["per", "uniform"])
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs in parallel, one torch thread each (default: up to 2)")
    p.add_argument("--out", type=Path, default=Path("dqn_cartpole_out"), help="output folder")
    p.add_argument("--smoke", action="store_true",
                   help="CI: 1 seed, 1,500 steps, one process; checks the code path, not learning")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every run is solved (final greedy mean over 100 episodes >= 475)")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override a hyperparameter, e.g. --set lr=5e-4 hidden=64")
    args = p.parse_args(argv)

    from ReplayTables import ConfigError

    try:
        require_demo_modules()
    except ConfigError as e:
        print(f"dqn_cartpole: {e}", file=sys.stderr)
        return 2
    settings = smoke_settings() if args.smoke else Settings()
    defaults = asdict(settings)
    try:
        overrides = parse_overrides(args.set, defaults)
    except KeyError as e:
        p.error(f"unknown hyperparameter {e.args[0]!r}; known: {', '.join(defaults)}")
    if args.steps is not None:
        overrides["steps"] = args.steps
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
    results = run_all(tasks, workers)
    elapsed = time.perf_counter() - t0
    all_solved = summarize(results, log)
    png = args.out / "learning_curves.png"
    plot(results, settings.steps, png)
    (args.out / "results.json").write_text(json.dumps({"settings": asdict(settings), "runs": results}))
    log.info("wall time %.1f s; wrote %s, %s and %s", elapsed, png, log_path, args.out / "results.json")
    log.info("every run solved (final greedy mean over %d episodes >= %.0f): %s", SOLVED_EPISODES, SOLVED,
             "yes" if all_solved else "no")
    for handler in log.handlers:
        handler.close()
    return 1 if args.check and not all_solved else 0


if __name__ == "__main__":
    sys.exit(main())
