exports.handle = (msg, ctx) => `${msg.word} x${msg.count}`;
