def handle(msg, ctx):
    for word in str(msg).lower().split():
        ctx.emit("out", word.strip(".,;:!?"))
