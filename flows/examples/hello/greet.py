def handle(msg, ctx):
    name = msg.get("name", "stranger") if isinstance(msg, dict) else str(msg)
    return f"{ctx.config['greeting']}, {name}!"
