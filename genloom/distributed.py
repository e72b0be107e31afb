"""Many processes, one run: torch.distributed under torchrun (gloo on CPU, NCCL on GPUs).

Data parallelism as DDP does it: the same model on every rank, each rank's gradients of its own rows of
the batch averaged across ranks (one bucketed all-reduce per optimizer phase) before the optimizer steps,
so every rank steps identically. Unlike wrapping the model in DistributedDataParallel, this goes through
any task's loss, a GAN's two phases and WGAN-GP's double backward alike. Rank 0 alone logs and writes.

With train.parallel = "fsdp" the model is sharded instead (torch's FSDP2 `fully_shard`: each block of a
ModuleList, then the whole model), for models too big for one device; its full state is gathered for
checkpoints and exports, which are the same files as a DDP or one-process run writes.

Outside torchrun (no WORLD_SIZE, or 1) everything here is a no-op and `world() == 1`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import time

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

from genloom.errors import GenloomError

TIMEOUT_ENV = "GENLOOM_DIST_TIMEOUT"  # seconds a rendezvous or collective may wait (default 300)


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank as torchrun set it (also after the process group is gone)."""
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, "300"))
    except ValueError:
        raise GenloomError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None


def setup(device: torch.device) -> int:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); returns the world size.
    A rendezvous that does not complete within GENLOOM_DIST_TIMEOUT seconds is one GenloomError line."""
    n = env_world()
    if n <= 1 or active():
        return world()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    wait = timeout_s()
    t0 = time.monotonic()
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=wait),
                                **({"device_id": device} if device.type == "cuda" else {}))
        dist.barrier()
    except (RuntimeError, ValueError, dist.DistError) as e:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise GenloomError(
            f"rendezvous at {where} did not complete in {time.monotonic() - t0:.0f}s (rank "
            f"{os.environ.get('RANK', '?')} of {n}; the wait is {TIMEOUT_ENV}={wait:g}s): start every rank, "
            f"check the address is reachable ({str(e).splitlines()[0][:160]})") from None
    return world()


def teardown() -> None:
    if active():
        dist.destroy_process_group()


@contextlib.contextmanager
def first_rank0():
    """Rank 0 runs the block first (preparing files), then the other ranks (reading them)."""
    if active() and rank() != 0:
        dist.barrier()
    yield
    if active() and rank() == 0:
        dist.barrier()


def rows(batch_size: int) -> slice:
    """This rank's rows of a global batch of batch_size * world() rows."""
    r = rank()
    return slice(r * batch_size, (r + 1) * batch_size)


def shard(n: int) -> range:
    """This rank's items of n (contiguous blocks, the first n % world ranks one longer)."""
    w, r = world(), rank()
    per, extra = divmod(n, w)
    start = r * per + min(r, extra)
    return range(start, start + per + (1 if r < extra else 0))


def all_reduce_grads(params) -> float:
    """Average the gradients of params over the ranks (one flat buffer per dtype); returns the seconds it took."""
    if not active():
        return 0.0
    t0 = time.perf_counter()
    grads = [p.grad for p in params if p.grad is not None]
    by_dtype: dict = {}
    for g in grads:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    w = world()
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= w
        offset = 0
        for g in group:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
    return time.perf_counter() - t0


def sum_floats(values: list[float], device: torch.device) -> list[float]:
    """The sums over ranks of a few floats (one small all-reduce)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not active():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, 0)


def state_to_sync(module: torch.nn.Module) -> list[torch.Tensor]:
    """What a step changes outside the optimizer: float buffers (BatchNorm statistics, a VQ codebook's EMA) and
    parameters that are not trained by gradients (EMA copies)."""
    return [t for t in [*module.buffers(), *(p for p in module.parameters() if not p.requires_grad)]
            if t.is_floating_point()]


def broadcast_tensors(tensors: list[torch.Tensor]) -> float:
    """Rank 0's values of these tensors on every rank, as DDP's broadcast_buffers (one flat buffer per dtype);
    returns the seconds it took."""
    if not active() or not tensors:
        return 0.0
    t0 = time.perf_counter()
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, 0)
        offset = 0
        for t in group:
            t.data.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()
    return time.perf_counter() - t0


def broadcast_object(obj):
    """Rank 0's object on every rank (torch's pickling between our own ranks; never a user's file)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_objects(obj) -> list | None:
    """Every rank's object, in rank order, on rank 0 (None elsewhere)."""
    if not active():
        return [obj]
    out = [None] * world() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def check_same(settings: dict, what: str = "config") -> None:
    """Every rank must run with rank 0's settings: a mismatch is one GenloomError line on every rank."""
    if not active():
        return
    mine = json.dumps(settings, sort_keys=True, default=str)
    digest = hashlib.sha256(mine.encode()).hexdigest()
    digests = [None] * world()
    dist.all_gather_object(digests, (digest, mine))
    ref = digests[0]
    for r, (d, text) in enumerate(digests):
        if d != ref[0]:
            key = _first_difference(json.loads(ref[1]), json.loads(text))
            raise GenloomError(f"rank {r}'s {what} differs from rank 0's at {key}: start every rank with the same "
                               f"--config and --set options")


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')} ({a!r} vs {b!r})"


# ---- FSDP2 ------------------------------------------------------------------------------------------------
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: torch.nn.Module) -> None:
    """fully_shard every block of the model's ModuleLists, then the model (FSDP2); methods the training loss
    calls instead of forward (the model's `fsdp_methods`) gather the parameters as forward does."""
    for module in list(model.modules()):
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)
    for name in getattr(model, "fsdp_methods", ()):
        register_fsdp_forward_method(model, name)


def _names(model, optimizer) -> list[str]:
    """The parameter names in the order a plain optimizer.state_dict() numbers them (group by group)."""
    fqn = {id(p): n for n, p in model.named_parameters()}
    return [fqn[id(p)] for g in optimizer.param_groups for p in g["params"]]


def full_state(model, optimizer) -> tuple[dict, dict]:
    """A sharded model's whole state dict and its optimizer's, in the plain layout (numbered params), on rank 0
    (every rank must call it: it all-gathers); ({}, {}) on the other ranks."""
    msd = get_model_state_dict(model, options=FULL)
    osd = get_optimizer_state_dict(model, optimizer, options=FULL) if optimizer is not None else None
    if not is_main() or osd is None:
        return msd, {}
    index = {n: i for i, n in enumerate(_names(model, optimizer))}
    plain = {"state": {index[n]: v for n, v in osd["state"].items()},
             "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]}
    return msd, plain


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Load a whole (plain) state into a sharded model and its optimizer, on every rank."""
    set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True))
    names = _names(model, optimizer)
    fqn = {"state": {names[int(i)]: v for i, v in optimizer_state["state"].items()},
           "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]}
                            for g in optimizer_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, fqn, options=StateDictOptions(full_state_dict=True))
