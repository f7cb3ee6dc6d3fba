// The operators' live heatmap: H3 cells drawn as SVG polygons, coloured by the chosen metric,
// refreshed from /ws/ops. Everything comes from this engine; nothing is fetched elsewhere.
(function () {
  "use strict";
  const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
  const token = params.get("token") || sessionStorage.getItem("hexdispatch-token") || "";
  if (token) sessionStorage.setItem("hexdispatch-token", token);
  const $ = (id) => document.getElementById(id);
  const svgNs = "http://www.w3.org/2000/svg";
  let cells = [];
  let socket = null;
  let frame = null;

  function status(text, state) {
    $("status").textContent = text;
    $("status").dataset.state = state;
  }

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const message = (body.error && body.error.message) || res.statusText;
      throw Object.assign(new Error(message), { status: res.status });
    }
    return body;
  }

  function colour(value, max) {
    // Square root: a few crowded cells do not wash out the rest of the map.
    const t = max > 0 ? Math.sqrt(Math.min(1, Math.max(0, value) / max)) : 0;
    const light = 92 - t * 62;
    return "hsl(" + (210 - t * 200) + ", 75%, " + light + "%)";
  }

  function value(cell, metric) {
    return metric === "surge" ? cell.surge - 1 : cell[metric];
  }

  function fit(list) {
    let minLat = 90, maxLat = -90, minLng = 180, maxLng = -180;
    for (const c of list) for (const [lat, lng] of c.boundary) {
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
      minLng = Math.min(minLng, lng); maxLng = Math.max(maxLng, lng);
    }
    const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    const w = Math.max((maxLng - minLng) * k, 1e-6), h = Math.max(maxLat - minLat, 1e-6);
    const scale = Math.min(960 / w, 660 / h);
    return ([lat, lng]) => [20 + (lng - minLng) * k * scale, 680 - (lat - minLat) * scale];
  }

  function draw() {
    const metric = $("metric").value;
    const map = $("map");
    map.replaceChildren();
    if (cells.length === 0) {
      status("no drivers or requests to show", "empty");
      return;
    }
    const max = Math.max(...cells.map((c) => value(c, metric)));
    const project = fit(cells);
    for (const c of cells) {
      const p = document.createElementNS(svgNs, "polygon");
      p.setAttribute("points", c.boundary.map((v) => project(v).join(",")).join(" "));
      p.setAttribute("fill", colour(value(c, metric), max));
      p.dataset.cell = c.cell;
      p.dataset.supply = c.supply;
      p.dataset.demand = c.demand;
      p.dataset.surge = c.surge;
      p.addEventListener("click", () => show(c));
      map.appendChild(p);
    }
    legend(metric, max);
    status(cells.length + " cells · " + new Date().toLocaleTimeString(), "live");
  }

  function legend(metric, max) {
    const top = metric === "surge" ? (1 + max).toFixed(1) + "×" : String(max);
    const low = metric === "surge" ? "1.0×" : "0";
    $("legend").innerHTML = "<b>" + metric + "</b><br>" +
      "<span class='swatch' style='background:" + colour(0, 1) + "'></span>" + low + " " +
      "<span class='swatch' style='background:" + colour(0.5, 1) + "'></span> " +
      "<span class='swatch' style='background:" + colour(1, 1) + "'></span>" + top;
  }

  async function show(c) {
    const rows = "<table><tr><th>cell</th><td>" + c.cell + "</td></tr><tr><th>supply</th><td>" +
      c.supply + "</td></tr><tr><th>demand</th><td>" + c.demand + "</td></tr><tr><th>surge</th><td>" +
      c.surge + "×</td></tr></table>";
    $("cell").innerHTML = rows + "<p>drivers…</p>";
    try {
      const body = await api("/api/locations/nearby?lat=" + c.centre[0] + "&lng=" + c.centre[1] +
        "&radius=" + Math.round(c.radius_m) + "&limit=20");
      const list = body.drivers.map((d) => "<tr><td>" + d.driver_id.slice(0, 8) + "…</td><td>" +
        Math.round(d.distance_m) + " m</td><td>" + d.vehicle_type + "</td></tr>").join("");
      $("cell").innerHTML = rows + "<p><b>" + body.drivers.length + " drivers</b></p><table>" + list + "</table>";
    } catch (e) {
      $("cell").innerHTML = rows + "<p>" + e.message + "</p>";
    }
  }

  async function trip(event) {
    event.preventDefault();
    const id = $("trip-id").value.trim();
    if (!id) return;
    try {
      const body = await api("/api/trips/" + encodeURIComponent(id) + "/events");
      $("trip").innerHTML = "<b>trip " + id.slice(0, 8) + "…</b><table>" + body.events.map((e) =>
        "<tr><td>" + e.seq + "</td><td>" + e.type + "</td><td>" + e.at.slice(11, 19) + "</td></tr>").join("") + "</table>";
    } catch (e) {
      $("trip").textContent = "trip " + id + ": " + e.message;
    }
  }

  function stats(s) {
    const byStatus = Object.entries(s.trips_by_status).map(([k, v]) => "<tr><td>" + k + "</td><td>" + v + "</td></tr>").join("");
    $("stats").innerHTML = "<table><tr><th>drivers connected</th><td>" + s.drivers_connected +
      "</td></tr><tr><th>live trips</th><td>" + s.trips_live + "</td></tr>" + byStatus + "</table>";
  }

  function connect() {
    if (socket) socket.close();
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      "/ws/ops?res=" + $("res").value + "&token=" + encodeURIComponent(token);
    socket = new WebSocket(url);
    socket.onmessage = (m) => {
      frame = JSON.parse(m.data);
      if (frame.type === "heatmap") { cells = frame.cells; draw(); }
      if (frame.type === "stats") stats(frame);
    };
    socket.onclose = (e) => {
      if (e.code === 1008) status("refused: " + (e.reason || "an operator token is needed"), "error");
    };
  }

  async function load() {
    if (!token) {
      status("refused: open this page with #token=<operator token>", "error");
      return;
    }
    try {
      const body = await api("/api/ops/heatmap?res=" + $("res").value + "&metric=" + $("metric").value);
      cells = body.cells;
      draw();
      connect();
    } catch (e) {
      status("refused: " + e.message, "error");
    }
  }

  $("metric").addEventListener("change", draw);
  $("res").addEventListener("change", load);
  $("trip-form").addEventListener("submit", trip);
  load();
})();
