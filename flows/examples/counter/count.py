def init(ctx):
    ctx.state.setdefault("counts", {})


def handle(msg, ctx):
    key = str(msg)
    counts = ctx.state["counts"]
    counts[key] = counts.get(key, 0) + 1
    return {"key": key, "count": counts[key]}
