exports.handle = (msg, ctx) => msg.toUpperCase();
