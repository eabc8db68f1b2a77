# @description Drops every packet it receives.
# @inports in
# @outports


def handle(msg, ctx):
    return None
