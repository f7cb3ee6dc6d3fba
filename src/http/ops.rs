//! Operator views: `GET /api/ops/heatmap` and `/ws/ops` (SPEC §4–§5). Per H3 cell at the chosen
//! resolution: supply (available drivers with a fresh position), demand (trips requested within
//! `pricing.surge_window_s`) and the surge those give; `/ws/ops` pushes the heatmap every
//! `ops.heatmap_interval_ms` with live counters.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode};
use futures_util::StreamExt;
use h3o::{CellIndex, Resolution};
use serde::Serialize;

use super::error::ApiError;
use super::input::{FieldError, Query};
use super::ws::{Opened, close, open};
use crate::actors::Core;
use crate::actors::protocol;
use crate::clock::now_ms;
use crate::dispatch::Role;
use crate::http::AppState;
use crate::http::caller::Caller;

/// Resolutions a heatmap may use: from regions down to the surge cells.
const RESOLUTIONS: std::ops::RangeInclusive<u8> = 4..=7;

/// One cell of a heatmap.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeatCell {
    /// H3 index, hex.
    pub cell: String,
    /// Available drivers.
    pub supply: u32,
    /// Recent trip requests.
    pub demand: u32,
    /// The surge this supply and demand give.
    pub surge: crate::dispatch::Surge,
    /// Centre, `[lat, lng]`.
    pub centre: [f64; 2],
    /// Distance from the centre to the farthest vertex, metres.
    pub radius_m: f64,
    /// Vertices, `[lat, lng]`, for drawing.
    pub boundary: Vec<[f64; 2]>,
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl HeatCell {
    fn new(cell: CellIndex, supply: u32, demand: u32, surge: crate::dispatch::Surge) -> Self {
        let centre = h3o::LatLng::from(cell);
        Self {
            cell: cell.to_string(),
            supply,
            demand,
            surge,
            centre: [round6(centre.lat()), round6(centre.lng())],
            radius_m: crate::geo::cell_radius_m(cell).round(),
            boundary: cell
                .boundary()
                .iter()
                .map(|v| [round6(v.lat()), round6(v.lng())])
                .collect(),
        }
    }
}

/// Which number the cells are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Available drivers.
    Supply,
    /// Recent requests.
    Demand,
    /// Surge.
    Surge,
}

fn metric(raw: Option<&str>) -> Result<Metric, FieldError> {
    match raw.unwrap_or("supply") {
        "supply" => Ok(Metric::Supply),
        "demand" => Ok(Metric::Demand),
        "surge" => Ok(Metric::Surge),
        other => Err(FieldError::invalid(
            "metric",
            format_args!("\"supply\", \"demand\" or \"surge\", got {other:?}"),
        )),
    }
}

fn resolution(q: &Query, surge_res: Resolution) -> Result<Resolution, FieldError> {
    let res = q.usize("res")?.unwrap_or(usize::from(u8::from(surge_res)));
    let max = u8::from(surge_res).min(*RESOLUTIONS.end());
    u8::try_from(res)
        .ok()
        .filter(|r| (*RESOLUTIONS.start()..=max).contains(r))
        .and_then(|r| Resolution::try_from(r).ok())
        .ok_or_else(|| {
            FieldError::out_of_range(format!(
                "res must be within [{}, {max}] (demand is kept per resolution-{} cell)",
                RESOLUTIONS.start(),
                u8::from(surge_res)
            ))
        })
}

/// The heatmap at `res`, ordered by `by` (largest first).
///
/// # Errors
///
/// 503 while the cell actors are stopping.
pub async fn heatmap(core: &Core, res: Resolution, by: Metric) -> Result<Vec<HeatCell>, ApiError> {
    let now = now_ms();
    let fresh_since = now.saturating_sub(
        i64::try_from(core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX),
    );
    let supply = core.shards.heat(res, fresh_since);
    let mut cells: BTreeMap<CellIndex, (u32, u32)> =
        supply.into_iter().map(|(cell, n)| (cell, (n, 0))).collect();
    for (cell, n) in core.market.demand_snapshot(now) {
        if let Some(parent) = cell.parent(res) {
            cells.entry(parent).or_insert((0, 0)).1 += n;
        }
    }
    let mut out: Vec<HeatCell> = cells
        .into_iter()
        .map(|(cell, (supply, demand))| {
            HeatCell::new(cell, supply, demand, core.market.surge_for(demand, supply))
        })
        .collect();
    out.sort_by(|a, b| match by {
        Metric::Supply => b.supply.cmp(&a.supply),
        Metric::Demand => b.demand.cmp(&a.demand),
        Metric::Surge => b.surge.cmp(&a.surge),
    });
    Ok(out)
}

/// `GET /api/ops/heatmap?res=7&metric=supply|demand|surge` → `{res, metric, cells: [{cell,
/// supply, demand, surge}], ts_ms}` (operators).
pub async fn get_heatmap(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let q = Query::parse(&req)?;
    let res = resolution(&q, core.market.surge_resolution())?;
    let by = metric(q.string("metric"))?;
    let cells = heatmap(&core, res, by).await?;
    Ok(HttpResponse::Ok().json(Heatmap {
        res: u8::from(res),
        metric: q.string("metric").unwrap_or("supply").to_owned(),
        cells,
        ts_ms: now_ms(),
    }))
}

/// `GET /api/ops/heatmap`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Heatmap {
    /// H3 resolution of the cells.
    res: u8,
    /// What the cells are ordered by.
    metric: String,
    /// Cells with drivers or recent requests, largest first.
    cells: Vec<HeatCell>,
    /// When, epoch ms.
    ts_ms: i64,
}

/// Live counters for `/ws/ops`.
fn stats(core: &Core) -> serde_json::Value {
    let by_status: BTreeMap<String, u64> = core
        .trips
        .count_by_status()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect();
    protocol::ops_stats(&protocol::OpsStats {
        drivers_online: core.drivers_online(),
        driver_actors: core.drivers.len(),
        trips_live: core.trip_actors.len(),
        trips_by_status: by_status,
        riders_connected: core.riders.len(),
        ts_ms: now_ms(),
    })
}

/// `GET /ws/ops?res=7` (operators): `heatmap` and `stats` frames every `ops.heatmap_interval_ms`.
///
/// # Errors
///
/// 400 when the request is not a WebSocket upgrade or `res` is out of range.
pub async fn ops_socket(
    req: HttpRequest,
    body: web::Payload,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(&req)?;
    let res = resolution(&q, core.market.surge_resolution())?;
    let (response, opened) = open(&req, body, &core, Role::Operator)?;
    if let Some(Opened {
        mut session,
        mut stream,
        ..
    }) = opened
    {
        let core = core.clone();
        actix_rt::spawn(async move {
            let every = Duration::from_millis(core.settings.ops.heatmap_interval_ms);
            let mut ticker = tokio::time::interval(every);
            let mut shutdown = core.shutdown_signal();
            let end = loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        let Ok(cells) = heatmap(&core, res, Metric::Supply).await else {
                            break Some((CloseCode::Away, "engine stopping".to_owned()));
                        };
                        let frame = protocol::heatmap(u8::from(res), &cells, now_ms());
                        if session.text(frame.to_string()).await.is_err()
                            || session.text(stats(&core).to_string()).await.is_err()
                        {
                            break None;
                        }
                    }
                    inbound = stream.next() => match inbound {
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if session.pong(&bytes).await.is_err() {
                                break None;
                            }
                        }
                        Some(Ok(AggregatedMessage::Close(_))) | None | Some(Err(_)) => break None,
                        Some(Ok(_)) => {}
                    },
                    _ = shutdown.changed() => break Some((CloseCode::Away, "server shutting down".to_owned())),
                }
            };
            if let Some((code, reason)) = end {
                close(session, code, reason).await;
            }
        });
    }
    Ok(response)
}

/// Text safe inside a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `scheme://host[:port]` of a URL, for the content security policy; a `{s}`-style subdomain
/// placeholder becomes the wildcard `*`.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    let labels: Vec<&str> = host
        .split('.')
        .map(|l| {
            if l.starts_with('{') && l.ends_with('}') {
                "*"
            } else {
                l
            }
        })
        .collect();
    Some(format!("{scheme}://{}", labels.join(".")))
}

/// `GET /ops`: the live map page. The page itself is public; everything it shows is fetched with
/// the operator token given in its URL fragment (`/ops#token=…`). Images may come from this engine
/// and, when `ops.tile_url` is set, from the tile server only.
pub async fn page(core: web::Data<AppState>) -> HttpResponse {
    let ops = &core.settings.ops;
    let tiles = ops.tile_url.as_deref().unwrap_or_default();
    let images = ops
        .tile_url
        .as_deref()
        .and_then(origin)
        .map_or_else(String::new, |o| format!(" {o}"));
    let html = include_str!("ops_page/index.html")
        .replace("{{tile_url}}", &attribute(tiles))
        .replace("{{tile_attribution}}", &attribute(&ops.tile_attribution));
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            format!(
                "default-src 'self'; img-src 'self' data:{images}; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'"
            ),
        ))
        .body(html)
}

/// `GET /ops/vendor/leaflet.js`: Leaflet 1.9.4 (BSD-2-Clause, `ops_page/vendor/LEAFLET-LICENSE`),
/// served by the engine so the page needs no CDN.
pub async fn leaflet_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(include_str!("ops_page/vendor/leaflet.js"))
}

/// `GET /ops/vendor/leaflet.css`.
pub async fn leaflet_style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(include_str!("ops_page/vendor/leaflet.css"))
}

/// `GET /ops/app.js`.
pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("ops_page/app.js"))
}

/// `GET /ops/app.css`.
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(include_str!("ops_page/app.css"))
}
