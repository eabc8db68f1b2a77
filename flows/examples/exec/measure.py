def handle(msg, ctx):
    text = str(msg)
    return {"text": text, "length": len(text)}
