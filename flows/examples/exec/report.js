exports.handle = (msg, ctx) => `${msg.shell.text} has ${msg.shell.length} characters (wrapped by sh)`;
