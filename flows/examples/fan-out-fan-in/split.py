def handle(msg, ctx):
    ctx.state["jobs"] = ctx.state.get("jobs", 0) + 1
    job = {"id": ctx.state["jobs"], "text": str(msg)}
    for port in ("words", "letters", "reverse"):
        ctx.emit(port, job)
