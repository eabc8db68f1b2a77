# @description Logs every packet it receives (the IDE shows it as output) and sends it on.
# @inports in
# @outports out
import json


def handle(msg, ctx):
    ctx.log(msg if isinstance(msg, str) else json.dumps(msg))
    return msg
