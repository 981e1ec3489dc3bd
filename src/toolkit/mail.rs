//! Mail capture (issue 16, `email.capture`): the mails the e-mail worker would have sent, kept
//! in a bounded ring instead, for `GET /admin/api/mail`, `imnotify mail list` and the admin page.
//!
//! The worker applies the same rules as for SMTP (the due time of D10, skipping read or deleted
//! notifications, grouping by tag of D12) and hands the composed mail here; a kept mail counts
//! as sent. Memory is bounded by `email.capture_capacity` mails (oldest dropped) of one
//! composed mail each, whose size the notification limits already bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One kept mail.
#[derive(Debug, Clone)]
pub struct CapturedMail {
    /// Increasing from 1 for the server's life; a clear does not reuse ids.
    pub id: u64,
    /// Unix seconds on the server's clock when the worker handled it.
    pub at: f64,
    /// The recipient's user id.
    pub user_id: i64,
    /// The notifications the mail is about (several for a tag group, D12), newest first.
    pub notification_ids: Vec<i64>,
    /// Header name and value as composed (not RFC 2047-encoded), in message order.
    pub headers: Vec<(String, String)>,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
}

/// The ring of kept mails.
pub struct MailCapture {
    capacity: usize,
    next_id: AtomicU64,
    ring: Mutex<VecDeque<CapturedMail>>,
}

impl MailCapture {
    /// A ring of at most `capacity` mails (0 keeps none).
    pub fn new(capacity: usize) -> MailCapture {
        MailCapture {
            capacity,
            next_id: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Keeps `mail` (its `id` is assigned here), dropping the oldest past the capacity.
    /// Returns the id.
    pub fn push(&self, mut mail: CapturedMail) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        mail.id = id;
        if self.capacity == 0 {
            return id;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(mail);
        id
    }

    /// The kept mails, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<CapturedMail> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(limit).cloned().collect()
    }

    pub fn clear(&self) {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(user_id: i64) -> CapturedMail {
        CapturedMail {
            id: 0,
            at: 0.0,
            user_id,
            notification_ids: vec![1],
            headers: vec![],
            text: String::new(),
            html: String::new(),
        }
    }

    #[test]
    fn keeps_the_newest_within_capacity_and_ids_go_on_after_a_clear() {
        let c = MailCapture::new(2);
        for u in 1..=3 {
            c.push(mail(u));
        }
        let l = c.list(10);
        assert_eq!(
            l.iter().map(|m| (m.id, m.user_id)).collect::<Vec<_>>(),
            [(3, 3), (2, 2)]
        );
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.push(mail(4)), 4);
        assert_eq!(c.list(10).len(), 1);
        let off = MailCapture::new(0);
        off.push(mail(1));
        assert!(off.is_empty());
    }
}
