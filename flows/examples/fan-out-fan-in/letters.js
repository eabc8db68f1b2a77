exports.handle = (job, ctx) => ({ id: job.id, part: "letters", value: job.text.replace(/\s/g, "").length });
