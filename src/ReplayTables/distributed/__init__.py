"""ReplayTables.distributed: one replay buffer sharded over Ray actors (extra ``ray``).

    import ray
    from ReplayTables.distributed import ShardedReplay

    ray.init()
    buffer = ShardedReplay(num_shards=4, max_size=1_000_000, structure=Transition, config=PERConfig())
    writer = buffer.writer()          # give it to a Ray actor: writer.add(...), writer.flush()
    batch = buffer.sample(256)        # global prioritized sample with importance weights

Importing this package does not import Ray; the first buffer does (a
:class:`~ReplayTables.errors.ConfigError` naming ``pip install 'ReplayTables[ray]'``
when it is missing). See ``docs/distributed.md``.
"""
from ReplayTables.checkpoint import register
from ReplayTables.distributed.sharded import ShardedReplay, shard_capacities
from ReplayTables.distributed.writer import ShardWriter

register(ShardedReplay)

__all__ = ["ShardWriter", "ShardedReplay", "shard_capacities"]
