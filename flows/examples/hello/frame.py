def handle(msg, ctx):
    return f"*** {msg} ***"
