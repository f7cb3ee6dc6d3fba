//! `NotificationActor`: turns trip events into messages for people — a push when the driver is on
//! the way or arriving, a text message on arrival, an e-mail receipt — through adapters behind one
//! trait. Each adapter publishes to its routing key (`notify.push`, `notify.sms`, `notify.email`)
//! through the outbox, so a notification is as durable as the event that caused it and the
//! delivery services (push gateway, SMS provider, mail sender) consume them from the exchange.
//!
//! Sockets are told by the trip actor itself (`trip_update`, `driver_location`); this actor handles
//! the people who are not looking at the app. It receives every committed trip event from the core
//! (`Core::save_trip`), fire and forget.

use actix::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::core::Core;
use crate::clock::now_ms;
use crate::persistence::{OutboxRow, Write};

/// One committed trip event.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TripEventNotice {
    /// The trip.
    pub trip_id: Uuid,
    /// Its rider.
    pub rider_id: Uuid,
    /// Its driver, if any.
    pub driver_id: Option<Uuid>,
    /// The event's seq.
    pub seq: u64,
    /// The event's type (`trip.accepted`, …).
    pub kind: &'static str,
    /// The fare, for receipts: minor units and currency.
    pub fare: Option<crate::dispatch::Money>,
}

/// What to tell whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The person (rider or driver id).
    pub recipient: Uuid,
    /// The trip it is about.
    pub trip_id: Uuid,
    /// Short title.
    pub title: String,
    /// The message.
    pub body: String,
}

/// A delivery channel: renders a notification into the message its service consumes.
pub trait Notifier: Send {
    /// Channel name, the routing key's suffix (`push`, `sms`, `email`).
    fn channel(&self) -> &'static str;
    /// The message body for the channel's consumer.
    fn render(&self, n: &Notification) -> Value;
}

/// Mobile push: title and body.
pub struct Push;
/// Text message: one line of at most 160 characters.
pub struct Sms;
/// E-mail: subject and body.
pub struct Email;

impl Notifier for Push {
    fn channel(&self) -> &'static str {
        "push"
    }

    fn render(&self, n: &Notification) -> Value {
        json!({"user_id": n.recipient, "trip_id": n.trip_id, "title": n.title, "body": n.body})
    }
}

impl Notifier for Sms {
    fn channel(&self) -> &'static str {
        "sms"
    }

    fn render(&self, n: &Notification) -> Value {
        let text: String = format!("{}: {}", n.title, n.body)
            .chars()
            .take(160)
            .collect();
        json!({"user_id": n.recipient, "trip_id": n.trip_id, "text": text})
    }
}

impl Notifier for Email {
    fn channel(&self) -> &'static str {
        "email"
    }

    fn render(&self, n: &Notification) -> Value {
        json!({"user_id": n.recipient, "trip_id": n.trip_id, "subject": n.title, "body": n.body})
    }
}

/// Who hears of an event, on which channels.
#[must_use]
pub fn plan(event: &TripEventNotice) -> Vec<(&'static str, Notification)> {
    let rider = |title: &str, body: String| Notification {
        recipient: event.rider_id,
        trip_id: event.trip_id,
        title: title.to_owned(),
        body,
    };
    match event.kind {
        "trip.accepted" => vec![(
            "push",
            rider("Driver on the way", "A driver accepted your trip.".into()),
        )],
        "trip.driver_arriving" => {
            let n = rider("Driver arriving", "Your driver is at the pickup.".into());
            vec![("push", n.clone()), ("sms", n)]
        }
        "trip.no_driver_found" => vec![(
            "push",
            rider(
                "No driver found",
                "No driver could take your trip. Please try again.".into(),
            ),
        )],
        "trip.cancelled" => event
            .driver_id
            .map(|driver| {
                vec![(
                    "push",
                    Notification {
                        recipient: driver,
                        trip_id: event.trip_id,
                        title: "Trip cancelled".into(),
                        body: "The rider cancelled the trip.".into(),
                    },
                )]
            })
            .unwrap_or_default(),
        "trip.completed" => vec![(
            "email",
            rider(
                "Your receipt",
                event.fare.map_or_else(
                    || "Thank you for riding.".to_owned(),
                    |f| format!("Fare: {} {} (minor units).", f.amount, f.currency),
                ),
            ),
        )],
        "payment.failed" => vec![(
            "email",
            rider(
                "Payment failed",
                "Your wallet could not cover the fare. Top it up and we will retry.".into(),
            ),
        )],
        _ => Vec::new(),
    }
}

/// Publishes notifications through the outbox.
pub struct NotificationActor {
    core: Core,
    notifiers: Vec<Box<dyn Notifier>>,
}

impl NotificationActor {
    /// An actor with the push, SMS and e-mail adapters.
    #[must_use]
    pub fn new(core: Core) -> Self {
        Self {
            core,
            notifiers: vec![Box::new(Push), Box::new(Sms), Box::new(Email)],
        }
    }
}

impl Actor for NotificationActor {
    type Context = Context<Self>;
}

impl Handler<TripEventNotice> for NotificationActor {
    type Result = ();

    fn handle(&mut self, event: TripEventNotice, _: &mut Self::Context) {
        let Some(persistence) = self.core.persistence() else {
            return;
        };
        for (channel, notification) in plan(&event) {
            let Some(notifier) = self.notifiers.iter().find(|n| n.channel() == channel) else {
                continue;
            };
            let row = OutboxRow {
                message_id: format!("{}:{}:{channel}", event.trip_id, event.seq),
                routing_key: format!("notify.{channel}"),
                payload: notifier.render(&notification).to_string(),
                created_ms: now_ms(),
            };
            if persistence.write(Write::Message(row)).is_err() {
                tracing::warn!(trip_id = %event.trip_id, "notification not queued: the writer has stopped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &'static str) -> TripEventNotice {
        TripEventNotice {
            trip_id: Uuid::now_v7(),
            rider_id: Uuid::now_v7(),
            driver_id: Some(Uuid::now_v7()),
            seq: 3,
            kind,
            fare: None,
        }
    }

    #[test]
    fn riders_hear_of_their_driver_and_drivers_of_cancellations() {
        let accepted = event("trip.accepted");
        let plan_a = plan(&accepted);
        assert_eq!(plan_a.len(), 1);
        assert_eq!(plan_a[0].1.recipient, accepted.rider_id);
        let arriving: Vec<&str> = plan(&event("trip.driver_arriving"))
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(arriving, ["push", "sms"]);
        let cancelled = event("trip.cancelled");
        assert_eq!(
            plan(&cancelled)[0].1.recipient,
            cancelled.driver_id.unwrap()
        );
        assert!(plan(&event("trip.matching")).is_empty());
    }

    #[test]
    fn texts_fit_in_one_message() {
        let n = Notification {
            recipient: Uuid::nil(),
            trip_id: Uuid::nil(),
            title: "t".repeat(100),
            body: "b".repeat(100),
        };
        assert_eq!(
            Sms.render(&n)["text"].as_str().unwrap().chars().count(),
            160
        );
        assert_eq!(Email.render(&n)["subject"], "t".repeat(100));
    }
}
