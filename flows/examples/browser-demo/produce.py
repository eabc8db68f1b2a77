import math


def handle(tick, ctx):
    """A tick from the page -> a point of a sine wave."""
    return {"x": tick, "y": math.sin(tick / 8)}
