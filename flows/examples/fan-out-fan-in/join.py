def handle(part, ctx):
    # Parts of one job arrive on different wires, in any order: wait for all of them.
    waiting = ctx.state.setdefault("waiting", {})
    parts = waiting.setdefault(str(part["id"]), {})
    parts[part["part"]] = part["value"]
    if len(parts) < ctx.config["parts"]:
        return None
    del waiting[str(part["id"])]
    return {"id": part["id"], **dict(sorted(parts.items()))}
