"""Stream helpers for Amaranth testbenches (``lib.stream`` interfaces)."""

__all__ = ["stream_put", "stream_get"]


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` (an interface the testbench drives) until accepted."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one payload from ``stream`` (an interface the testbench reads) and return it."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload
