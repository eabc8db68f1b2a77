# @description Sends the packet last received on "data" each time "in" receives one.
# @inports in data
# @outports out


def handle(msg, ctx):
    if ctx.port == "data":
        ctx.state["data"] = msg
        return None
    return ctx.state.get("data")
