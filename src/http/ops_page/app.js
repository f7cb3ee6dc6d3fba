// The operators' live map: H3 cells on a Leaflet map (pan, zoom, scale bar), coloured by the chosen
// metric and refreshed from /ws/ops; drivers as dots once zoomed in; a cell's numbers and drivers on
// click; and trip replay: a finished (or running) trip's events and its driver's trail played back
// with a time slider. Leaflet is served by this engine; a base layer is fetched only when the
// operator configured `ops.tile_url`. Nothing else comes from elsewhere.
(function () {
  "use strict";
  const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
  const token = params.get("token") || sessionStorage.getItem("hexdispatch-token") || "";
  if (token) sessionStorage.setItem("hexdispatch-token", token);
  const $ = (id) => document.getElementById(id);
  const DRIVER_ZOOM = 13;

  const map = L.map("map", { zoomControl: true, preferCanvas: false, worldCopyJump: true });
  const tileUrl = document.body.dataset.tileUrl;
  if (tileUrl) {
    L.tileLayer(tileUrl, { attribution: document.body.dataset.tileAttribution || "", maxZoom: 19 }).addTo(map);
  } else {
    $("map").classList.add("no-tiles");
  }
  L.control.scale({ imperial: false }).addTo(map);
  map.setView([20, 0], 2);

  const cellLayer = L.layerGroup().addTo(map);
  const driverLayer = L.layerGroup().addTo(map);
  const replayLayer = L.layerGroup().addTo(map);
  let cells = [];
  let polygons = new Map();
  let selected = null;
  let fitted = false;
  let socket = null;
  let driversAt = 0;
  let driversAsked = 0;
  let playing = null;

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
    return "hsl(" + Math.round(210 - t * 200) + ", 75%, " + Math.round(light) + "%)";
  }

  function value(cell, metric) {
    return metric === "surge" ? cell.surge - 1 : cell[metric];
  }

  function mark(polygon, c) {
    const el = polygon.getElement();
    if (!el) return;
    el.dataset.cell = c.cell;
    el.dataset.supply = c.supply;
    el.dataset.demand = c.demand;
    el.dataset.surge = c.surge;
  }

  // Draws the cells, reusing the polygons of cells still present.
  function draw() {
    const metric = $("metric").value;
    document.body.dataset.metric = metric;
    document.body.dataset.res = $("res").value;
    document.body.dataset.cells = cells.length;
    const max = cells.length ? Math.max(...cells.map((c) => value(c, metric))) : 0;
    const seen = new Set();
    for (const c of cells) {
      seen.add(c.cell);
      const style = { fillColor: colour(value(c, metric), max), fillOpacity: 0.7 };
      let polygon = polygons.get(c.cell);
      if (polygon) {
        polygon.setStyle(style);
        polygon.data = c;
      } else {
        polygon = L.polygon(c.boundary, Object.assign({ className: "cell", weight: 1, color: "#fff" }, style));
        polygon.data = c;
        polygon.on("click", () => show(polygon));
        polygon.addTo(cellLayer);
        polygons.set(c.cell, polygon);
      }
      mark(polygon, c);
    }
    for (const [id, polygon] of polygons) {
      if (!seen.has(id)) {
        cellLayer.removeLayer(polygon);
        polygons.delete(id);
      }
    }
    if (!fitted && cells.length) {
      map.fitBounds(L.featureGroup([...polygons.values()]).getBounds(), { padding: [20, 20] });
      fitted = true;
    }
    legend(metric, max);
    status(cells.length ? cells.length + " cells · " + new Date().toLocaleTimeString()
      : "no drivers or requests to show", cells.length ? "live" : "empty");
  }

  function legend(metric, max) {
    const top = metric === "surge" ? (1 + max).toFixed(1) + "×" : String(max);
    const low = metric === "surge" ? "1.0×" : "0";
    $("legend").innerHTML = "<b>" + metric + "</b><br>" +
      "<span class='swatch' style='background:" + colour(0, 1) + "'></span>" + low + " " +
      "<span class='swatch' style='background:" + colour(0.5, 1) + "'></span> " +
      "<span class='swatch' style='background:" + colour(1, 1) + "'></span>" + top;
  }

  function escape(text) {
    return String(text).replace(/[&<>"']/g, (ch) => "&#" + ch.charCodeAt(0) + ";");
  }

  async function show(polygon) {
    const c = polygon.data;
    if (selected && selected.getElement()) selected.getElement().classList.remove("selected");
    selected = polygon;
    if (polygon.getElement()) polygon.getElement().classList.add("selected");
    const rows = "<table><tr><th>cell</th><td>" + escape(c.cell) + "</td></tr><tr><th>supply</th><td>" +
      c.supply + "</td></tr><tr><th>demand</th><td>" + c.demand + "</td></tr><tr><th>surge</th><td>" +
      c.surge + "×</td></tr></table>";
    $("cell").innerHTML = rows + "<p>drivers…</p>";
    try {
      const body = await api("/api/locations/nearby?lat=" + c.centre[0] + "&lng=" + c.centre[1] +
        "&radius=" + Math.max(1, Math.round(c.radius_m)) + "&limit=20");
      const list = body.drivers.map((d) => "<tr class='cell-driver' data-driver='" + escape(d.driver_id) + "'><td>" +
        escape(d.driver_id.slice(0, 8)) + "…</td><td>" + Math.round(d.distance_m) + " m</td><td>" +
        escape(d.vehicle_type) + "</td></tr>").join("");
      $("cell").innerHTML = rows + "<p><b id='cell-drivers'>" + body.drivers.length + " drivers</b></p><table>" + list + "</table>";
    } catch (e) {
      $("cell").innerHTML = rows + "<p>" + escape(e.message) + "</p>";
    }
  }

  // Drivers as dots, once zoomed in far enough for them to mean something.
  async function drivers() {
    driversAt = Date.now();
    const asked = ++driversAsked;
    if (map.getZoom() < DRIVER_ZOOM) {
      driverLayer.clearLayers();
      document.body.dataset.drivers = 0;
      return;
    }
    const centre = map.getCenter();
    const radius = Math.min(50000, Math.max(1, Math.round(map.distance(centre, map.getBounds().getNorthEast()))));
    try {
      const body = await api("/api/locations/nearby?lat=" + centre.lat.toFixed(6) + "&lng=" +
        centre.lng.toFixed(6) + "&radius=" + radius + "&limit=100");
      // An older answer arriving after a newer one is dropped.
      if (asked !== driversAsked) return;
      driverLayer.clearLayers();
      for (const d of body.drivers) {
        L.circleMarker([d.lat, d.lng], { className: "driver", radius: 4 })
          .bindTooltip(d.driver_id.slice(0, 8) + " · " + d.vehicle_type)
          .addTo(driverLayer);
      }
      document.body.dataset.drivers = body.drivers.length;
    } catch (e) {
      status("drivers: " + e.message, "error");
    }
  }

  // Trip replay: events and the driver's trail, played back along a time slider.
  let replay = null;

  function at(trail, t) {
    if (trail.length === 0) return null;
    if (t <= trail[0].t) return trail[0];
    for (let i = 1; i < trail.length; i++) {
      const a = trail[i - 1], b = trail[i];
      if (t <= b.t) {
        const k = b.t === a.t ? 1 : (t - a.t) / (b.t - a.t);
        return { lat: a.lat + (b.lat - a.lat) * k, lng: a.lng + (b.lng - a.lng) * k, t };
      }
    }
    return trail[trail.length - 1];
  }

  function seek(t) {
    if (!replay) return;
    const p = at(replay.trail, t);
    if (p) {
      replay.marker.setLatLng([p.lat, p.lng]);
      const el = replay.marker.getElement();
      if (el) { el.dataset.lat = p.lat.toFixed(6); el.dataset.lng = p.lng.toFixed(6); }
    }
    for (const row of document.querySelectorAll("#trip tr[data-at]")) {
      row.className = Number(row.dataset.at) <= t ? "past" : "future";
    }
    $("replay-clock").textContent = new Date(t).toISOString().slice(11, 19);
  }

  async function trip(event) {
    event.preventDefault();
    const id = $("trip-id").value.trim();
    if (!id) return;
    replayLayer.clearLayers();
    replay = null;
    stop();
    try {
      const path = "/api/trips/" + encodeURIComponent(id);
      const [t, log] = await Promise.all([api(path), api(path + "/events")]);
      const events = log.events.map((e) => ({ seq: e.seq, type: e.type, t: Date.parse(e.at) }));
      const start = events[0].t, end = events[events.length - 1].t;
      let trail = [];
      if (t.driver_id) {
        const from = Date.parse(t.status_times.ACCEPTED || t.created_at);
        const history = await api("/api/locations/drivers/" + t.driver_id + "/history?from=" + from +
          "&to=" + (end + 1000) + "&limit=10000");
        trail = history.positions.map((p) => ({ lat: p.lat, lng: p.lng, t: p.ts_ms }));
      }
      const line = trail.length ? trail.map((p) => [p.lat, p.lng]) : [[t.origin.lat, t.origin.lng]];
      L.polyline(line, { className: "trail" }).addTo(replayLayer);
      L.circleMarker([t.origin.lat, t.origin.lng], { radius: 5, className: "pickup" }).bindTooltip("pickup").addTo(replayLayer);
      L.circleMarker([t.destination.lat, t.destination.lng], { radius: 5, className: "dropoff" }).bindTooltip("drop-off").addTo(replayLayer);
      const marker = L.circleMarker(line[0], { radius: 7, className: "replay-marker" }).addTo(replayLayer);
      map.fitBounds(L.latLngBounds(line.concat([[t.origin.lat, t.origin.lng], [t.destination.lat, t.destination.lng]])), { padding: [40, 40], maxZoom: 17 });
      const first = Math.min(start, trail.length ? trail[0].t : start);
      const last = Math.max(end, trail.length ? trail[trail.length - 1].t : end);
      replay = { trail, marker };
      $("trip").innerHTML = "<b>trip " + escape(id.slice(0, 8)) + "… · " + escape(t.status) + "</b>" +
        "<p><input id='replay-time' type='range' min='" + first + "' max='" + last + "' step='any' value='" + first + "'> " +
        "<button id='replay-play' type='button'>Play</button> <span id='replay-clock'></span> · " +
        trail.length + " positions</p><table>" +
        events.map((e) => "<tr data-at='" + e.t + "'><td>" + e.seq + "</td><td>" + escape(e.type) + "</td><td>" +
          new Date(e.t).toISOString().slice(11, 19) + "</td></tr>").join("") + "</table>";
      $("replay-time").addEventListener("input", (e) => seek(Number(e.target.value)));
      $("replay-play").addEventListener("click", () => play(first, last));
      seek(first);
    } catch (e) {
      $("trip").textContent = "trip " + id + ": " + e.message;
    }
  }

  function stop() {
    if (playing) clearInterval(playing);
    playing = null;
  }

  function play(first, last) {
    stop();
    const slider = $("replay-time");
    const steps = 100;
    let i = 0;
    playing = setInterval(() => {
      i += 1;
      const t = first + ((last - first) * i) / steps;
      slider.value = t;
      seek(t);
      if (i >= steps) stop();
    }, 50);
  }

  function stats(s) {
    const byStatus = Object.entries(s.trips_by_status).map(([k, v]) => "<tr><td>" + escape(k) + "</td><td>" + v + "</td></tr>").join("");
    $("stats").innerHTML = "<table><tr><th>drivers online</th><td id='stat-online'>" + s.drivers_online +
      "</td></tr><tr><th>riders connected</th><td>" + s.riders_connected +
      "</td></tr><tr><th>live trips</th><td>" + s.trips_live + "</td></tr>" + byStatus + "</table>";
  }

  function connect() {
    if (socket) { socket.onclose = null; socket.close(); }
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      "/ws/ops?res=" + $("res").value + "&token=" + encodeURIComponent(token);
    socket = new WebSocket(url);
    socket.onmessage = (m) => {
      const frame = JSON.parse(m.data);
      if (frame.type === "heatmap" && String(frame.res) === $("res").value) { cells = frame.cells; draw(); }
      if (frame.type === "stats") stats(frame);
      if (Date.now() - driversAt > 2000) drivers();
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
  map.on("moveend", drivers);
  load();
})();
