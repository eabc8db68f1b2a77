def handle(job, ctx):
    return {"id": job["id"], "part": "words", "value": len(job["text"].split())}
