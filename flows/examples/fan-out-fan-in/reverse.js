exports.handle = (job, ctx) => ({ id: job.id, part: "reverse", value: [...job.text].reverse().join("") });
