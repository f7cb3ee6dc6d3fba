//! OpenTelemetry traces: the engine binary exports spans over OTLP/HTTP (JSON) to a receiver
//! started here. A request carrying a W3C `traceparent`, the trip actor's handling of it, the
//! outbox publish of the event it caused and the payment consumer's settlement form one trace,
//! with each span the child of the one before; on RabbitMQ (when it is here) the message itself
//! carries that trace. Without `telemetry.otlp_endpoint`, nothing is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use hexdispatch::dispatch::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::broker::Broker;
use crate::durability::Http;
use crate::services::{EngineProcess, amqp_url};

/// Every OTLP/HTTP JSON body posted to `/v1/traces`.
type Received = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP receiver on a port of its own.
async fn receiver() -> (String, Received, actix_web::dev::ServerHandle) {
    let received: Received = Arc::default();
    let store = received.clone();
    let server = HttpServer::new(move || {
        let store = store.clone();
        App::new()
            .app_data(web::PayloadConfig::new(16 << 20))
            .route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let store = store.clone();
                    async move {
                        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                            store.lock().unwrap().push(v);
                        }
                        HttpResponse::Ok().json(json!({}))
                    }
                }),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (address, received, handle)
}

/// One exported span.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Value,
}

impl Span {
    fn attr(&self, key: &str) -> Option<String> {
        self.attributes.as_array()?.iter().find_map(|a| {
            (a["key"] == key).then(|| {
                a["value"]["stringValue"]
                    .as_str()
                    .map_or_else(|| a["value"].to_string(), str::to_owned)
            })
        })
    }
}

fn spans(received: &Received) -> (Vec<Span>, Vec<String>) {
    let mut out = Vec::new();
    let mut services = Vec::new();
    for body in received.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for a in rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if a["key"] == "service.name" {
                    services.push(a["value"]["stringValue"].as_str().unwrap_or("").to_owned());
                }
            }
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Span {
                        name: s["name"].as_str().unwrap_or("").to_owned(),
                        trace_id: s["traceId"].as_str().unwrap_or("").to_lowercase(),
                        span_id: s["spanId"].as_str().unwrap_or("").to_lowercase(),
                        parent: s["parentSpanId"].as_str().unwrap_or("").to_lowercase(),
                        attributes: s["attributes"].clone(),
                    });
                }
            }
        }
    }
    (out, services)
}

#[actix_rt::test]
async fn a_request_its_trip_handling_the_publish_and_the_payment_form_one_trace() {
    let (otlp, received, server) = receiver().await;
    let dir = std::env::temp_dir().join(format!("hexdispatch-traces-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = vec![
        ("HEXDISPATCH__TELEMETRY__OTLP_ENDPOINT", otlp.clone()),
        (
            "HEXDISPATCH__TELEMETRY__SERVICE_NAME",
            "hexdispatch-test".to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    // On RabbitMQ, an exchange of the test's own with a queue on it, to read the messages.
    let broker = match amqp_url().await {
        Some(url) => {
            let broker = Broker::open(&url).await;
            env.push(("HEXDISPATCH__AMQP__URL", url));
            env.push(("HEXDISPATCH__AMQP__EXCHANGE", broker.exchange.clone()));
            Some(broker)
        }
        None => None,
    };
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);

    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, trip) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, trip_id);
    let base = format!("/api/trips/{trip_id}");
    // The accept is traced too: through the driver's actor into the trip's.
    let accept_trace = Uuid::now_v7().simple().to_string();
    let accepted = awc::Client::default()
        .put(format!("{}{base}/accept", engine.address))
        .bearer_auth(&driver_token)
        .insert_header((
            "traceparent",
            format!("00-{accept_trace}-00f067aa0ba902b7-01"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    let pin = http.trip(&rider, &trip_id).await["start_pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = http
        .call(
            "PUT",
            &format!("{base}/start"),
            &driver_token,
            Some(json!({"pin": pin})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // The completion comes from a caller that is itself traced.
    let trace_id = Uuid::now_v7().simple().to_string();
    let caller_span = format!("{:016x}", rand::random::<u64>() | 1);
    let client = awc::Client::default();
    let res = client
        .put(format!("{}{base}/complete", engine.address))
        .bearer_auth(&driver_token)
        .insert_header(("traceparent", format!("00-{trace_id}-{caller_span}-01")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let mut found = None;
    for _ in 0..100 {
        let (all, _) = spans(&received);
        let ours: Vec<Span> = all.into_iter().filter(|s| s.trace_id == trace_id).collect();
        if ours.iter().any(|s| s.name == "payment.settle") {
            found = Some(ours);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours = found.unwrap_or_else(|| {
        let (all, _) = spans(&received);
        panic!(
            "no payment span in trace {trace_id}; {} spans received: {:?}",
            all.len(),
            all.iter()
                .map(|s| (&s.name, &s.trace_id))
                .collect::<Vec<_>>()
        )
    });
    let one = |name: &str, parent: &str| -> Span {
        ours.iter()
            .find(|s| s.name == name && s.parent == parent)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} span under {parent}: {ours:#?}"))
    };
    let request = one("request", &caller_span);
    assert_eq!(
        request.attr("path").as_deref(),
        Some(format!("{base}/complete").as_str())
    );
    let handling = one("trip", &request.span_id);
    assert_eq!(handling.attr("trip_id").as_deref(), Some(trip_id.as_str()));
    let publish = ours
        .iter()
        .find(|s| {
            s.name == "outbox.publish"
                && s.parent == handling.span_id
                && s.attr("routing_key").as_deref() == Some("trip.completed")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no publish of trip.completed under the trip span: {ours:#?}"));
    let settle = one("payment.settle", &publish.span_id);
    assert_eq!(settle.attr("trip_id").as_deref(), Some(trip_id.as_str()));
    let (_, services) = spans(&received);
    let (all, _) = spans(&received);
    let accept: Vec<&Span> = all.iter().filter(|s| s.trace_id == accept_trace).collect();
    let accept_request = accept
        .iter()
        .find(|s| s.name == "request" && s.parent == "00f067aa0ba902b7")
        .unwrap_or_else(|| panic!("the accept's request span: {accept:#?}"));
    let accept_handling = accept
        .iter()
        .find(|s| s.name == "trip" && s.parent == accept_request.span_id)
        .unwrap_or_else(|| panic!("the trip's handling of the accept: {accept:#?}"));
    assert_eq!(
        accept_handling.attr("handling").as_deref(),
        Some("trip.accept")
    );
    assert!(
        accept.iter().any(|s| s.name == "outbox.publish"
            && s.parent == accept_handling.span_id
            && s.attr("routing_key").as_deref() == Some("trip.accepted")),
        "trip.accepted is published in the accept's trace: {accept:#?}"
    );
    assert!(
        services.iter().all(|s| s == "hexdispatch-test"),
        "{services:?}"
    );

    if let Some(broker) = &broker {
        let deliveries = broker.deliveries_of(&trip_id, "trip.completed").await;
        let completed = deliveries
            .last()
            .expect("the completion reached the exchange");
        let header = completed
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("traceparent") {
                Some(lapin::types::AMQPValue::LongString(s)) => Some(s.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        assert_eq!(
            header,
            format!("00-{trace_id}-{}-01", publish.span_id),
            "the message carries its publish span"
        );
    }
    drop(engine);
    server.stop(true).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn without_an_endpoint_no_span_leaves_the_process() {
    let (_otlp, received, server) = receiver().await;
    let dir = std::env::temp_dir().join(format!("hexdispatch-notraces-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    // The receiver listens, but the engine is not told about it.
    let engine = EngineProcess::start(&dir, &[("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned())]).await;
    let http = Http::new(&engine.address);
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let (status, _) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(received.lock().unwrap().is_empty());
    drop(engine);
    server.stop(true).await;
    let _ = std::fs::remove_dir_all(&dir);
}
