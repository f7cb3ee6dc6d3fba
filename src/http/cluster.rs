//! `GET /api/cluster/owner`: which instance owns a point's region (SPEC §11).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::error::ApiError;
use super::input::Query;
use crate::http::AppState;

/// The header naming the instance that handled a request.
pub const INSTANCE_HEADER: &str = "Hexdispatch-Instance";

#[derive(Serialize)]
struct Owner<'a> {
    /// The region (an H3 cell at `cluster.region_resolution`), as hex.
    region: String,
    instance: &'a str,
    url: String,
}

/// `GET /api/cluster/owner?lat=&lng=` → `{region, instance, url}`. A single instance owns every
/// region; its URL is the address it was asked at.
pub async fn owner(req: HttpRequest, core: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let point = Query::parse(&req)?.point()?;
    let region = core.regions.region_of(point);
    let peer = core.regions.owner(region);
    let url = if peer.url.is_empty() {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    } else {
        peer.url.clone()
    };
    Ok(HttpResponse::Ok().json(Owner {
        region: region.to_string(),
        instance: &peer.id,
        url,
    }))
}
