// A point in [-1, 1] -> canvas coordinates (the canvas is 600 x 200).
exports.handle = (point) => ({ x: (point.x * 4) % 600, y: Math.round(100 - 80 * point.y), tick: point.x });
