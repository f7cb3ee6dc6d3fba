//! Against the real RabbitMQ: every transition of a trip on a queue bound to the exchange, in
//! order; redelivered completions charge once; a malformed message is dead-lettered and the
//! consumer goes on; a cut broker connection loses nothing. Each test uses an exchange (and so
//! queues) of its own.

use std::time::Duration;

use futures_util::StreamExt;
use hexdispatch::dispatch::Role;
use hexdispatch::persistence::bus::backlog;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};
use crate::payments::completed_trip;
use crate::services::{Proxy, amqp_url};

/// An exchange of the test's own, and a queue bound to everything on it.
pub struct Broker {
    _connection: Connection,
    channel: Channel,
    /// The exchange's name (give it to the engine as `amqp.exchange`).
    pub exchange: String,
    queue: String,
}

impl Broker {
    /// Declares the test's exchange and a queue bound to everything on it.
    pub async fn open(url: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exchange = format!("hx-test-{}", Uuid::now_v7());
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = format!("{exchange}.everything");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _connection: connection,
            channel,
            exchange,
            queue,
        }
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) {
        self.publish_to(&self.exchange, routing_key, body).await;
    }

    async fn publish_to(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Routing keys of the messages about `trip_id`, until `last` arrives.
    async fn events_of(&self, trip_id: &str, last: &str) -> Vec<String> {
        self.deliveries_of(trip_id, last)
            .await
            .iter()
            .map(|d| d.routing_key.to_string())
            .collect()
    }

    /// The messages about `trip_id`, until `last` arrives.
    pub async fn deliveries_of(&self, trip_id: &str, last: &str) -> Vec<lapin::message::Delivery> {
        let mut consumer = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                format!("test-{}", Uuid::now_v7()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .expect("an event within 20 s")
                .expect("consumer open")
                .unwrap();
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            // Notifications about the trip share its id prefix; only its events count here.
            if !id.starts_with(trip_id) || delivery.routing_key.as_str().starts_with("notify.") {
                continue;
            }
            let headers = delivery.properties.headers().clone().unwrap_or_default();
            assert!(
                headers.inner().contains_key("traceparent"),
                "trace context travels"
            );
            assert!(headers.inner().contains_key("x-event-type"));
            let done = delivery.routing_key.as_str() == last;
            deliveries.push(delivery);
            if done {
                return deliveries;
            }
        }
    }

    async fn dead_letter(&self) -> Option<Vec<u8>> {
        for _ in 0..100 {
            if let Some(message) = self
                .channel
                .basic_get(
                    format!("{}.payments.dead", self.exchange).as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
            {
                return Some(message.delivery.data.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn clean(self) {
        for queue in [
            self.queue.clone(),
            format!("{}.payments", self.exchange),
            format!("{}.payments.dead", self.exchange),
        ] {
            if let Err(e) = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                eprintln!("could not delete {queue}: {e}");
            }
        }
        for exchange in [self.exchange.clone(), format!("{}.dlx", self.exchange)] {
            let _ = self
                .channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

async fn engine(url: &str, exchange: &str) -> TestApp {
    let (url, exchange) = (url.to_owned(), exchange.to_owned());
    spawn_app_with(move |s| {
        s.amqp.url = Some(url);
        s.amqp.exchange = exchange;
        s.amqp.max_attempts = 3;
        s.payments.reconcile_interval_s = 2.0;
    })
    .await
}

async fn fund(app: &TestApp, rider: Uuid, amount: i64) {
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let r = app
        .post(
            &format!("/api/riders/{rider}/wallet/topup"),
            Some(&operator),
            &json!({"amount": {"amount": amount, "currency": "USD"}, "reference": Uuid::now_v7().to_string()}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn event_types(app: &TestApp, token: &str, trip_id: &str) -> Vec<String> {
    let r = app
        .get(&format!("/api/trips/{trip_id}/events"), Some(token))
        .await;
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn paid(app: &TestApp, token: &str, trip_id: &str) {
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let t = app.get(&format!("/api/trips/{trip_id}"), Some(token)).await;
        if t.body["status"] == "PAYMENT_PROCESSED" {
            return;
        }
        last = t.body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("trip {trip_id} was never paid: {last}");
}

#[actix_rt::test]
async fn every_transition_reaches_the_exchange_in_order_and_redeliveries_charge_once() {
    let Some(url) = amqp_url().await else {
        return;
    };
    let broker = Broker::open(&url).await;
    let app = engine(&url, &broker.exchange).await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    fund(&app, rider_id, 5_000).await;
    let (trip_id, _) = completed_trip(&app, &rider).await;
    paid(&app, &rider, &trip_id).await;
    let on_the_wire = broker.events_of(&trip_id, "payment.captured").await;
    assert_eq!(on_the_wire, event_types(&app, &rider, &trip_id).await);

    // The same completion three more times: charged once.
    let body = json!({"trip_id": trip_id}).to_string();
    for _ in 0..3 {
        broker.publish("trip.completed", body.as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = app.core.persistence().unwrap().store();
    assert_eq!(store.count("payments").await.unwrap(), 1);
    let wallet = app
        .get(&format!("/api/riders/{rider_id}/wallet"), Some(&rider))
        .await;
    assert_eq!(wallet.body["balance"]["amount"], 5_000 - 700);
    app.handle.stop().await;
    broker.clean().await;
}

#[actix_rt::test]
async fn a_malformed_message_is_dead_lettered_and_the_consumer_goes_on() {
    let Some(url) = amqp_url().await else {
        return;
    };
    let broker = Broker::open(&url).await;
    let app = engine(&url, &broker.exchange).await;
    // Let the consumer declare its queue before publishing to it.
    for _ in 0..100 {
        // A passive declare of a missing queue closes its channel: probe on a channel of its own.
        let probe = broker._connection.create_channel().await.unwrap();
        if probe
            .queue_declare(
                format!("{}.payments", broker.exchange).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Straight into the payment queue (the default exchange routes by queue name): its binding to
    // the topic exchange may still be on its way.
    broker
        .publish_to("", &format!("{}.payments", broker.exchange), b"{not json")
        .await;
    assert_eq!(
        broker.dead_letter().await.as_deref(),
        Some(&b"{not json"[..])
    );
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    fund(&app, rider_id, 5_000).await;
    let (trip_id, _) = completed_trip(&app, &rider).await;
    paid(&app, &rider, &trip_id).await;
    app.handle.stop().await;
    broker.clean().await;
}

#[actix_rt::test]
async fn a_cut_broker_connection_loses_nothing_and_the_outbox_drains() {
    let Some(url) = amqp_url().await else {
        return;
    };
    let broker = Broker::open(&url).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let (credentials, rest) = url.split_once('@').unwrap();
    let vhost = rest.split_once('/').map_or("%2f", |(_, v)| v);
    let proxied = format!("{credentials}@127.0.0.1:{}/{vhost}", proxy.port);
    let app = engine(&proxied, &broker.exchange).await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    fund(&app, rider_id, 5_000).await;

    proxy.cut();
    let (trip_id, _) = completed_trip(&app, &rider).await;
    let store = app.core.persistence().unwrap().store().clone();
    let mut down = false;
    for _ in 0..200 {
        let ready = app.get("/ready", None).await;
        if ready.body["checks"]["broker"] == "down" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "/ready names the broker while it is away");
    assert!(
        backlog(&store).await.unwrap() > 0,
        "events wait in the outbox"
    );

    proxy.restore();
    paid(&app, &rider, &trip_id).await;
    for _ in 0..300 {
        if backlog(&store).await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backlog(&store).await.unwrap(), 0, "the outbox drained");
    let on_the_wire = broker.events_of(&trip_id, "payment.captured").await;
    assert_eq!(
        on_the_wire,
        event_types(&app, &rider, &trip_id).await,
        "nothing lost, in order"
    );
    assert_eq!(app.get("/ready", None).await.status, 200);
    app.handle.stop().await;
    broker.clean().await;
}
