# @description Sends every packet it receives on unchanged.
# @inports in
# @outports out


def handle(msg, ctx):
    return msg
