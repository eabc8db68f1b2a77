// Runs in the web page that connected as client "demo": draws each point on #chart.
exports.handle = (point, ctx) => {
  const canvas = document.getElementById("chart");
  const g = canvas.getContext("2d");
  if (point.x < 4) g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#1f6feb";
  g.fillRect(point.x, point.y, 4, 4);
  ctx.state.points = (ctx.state.points || 0) + 1;
  document.getElementById("points").textContent = String(ctx.state.points);
};
