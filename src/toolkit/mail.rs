//! Mail capture (issue 16, `email.capture`): the mails the e-mail worker would have sent, kept
//! in a bounded ring instead, for `GET /admin/api/mail`, `imnotify mail list` and the admin page.
//!
//! The worker applies the same rules as for SMTP (the due time of D10, skipping read or deleted
//! notifications, grouping by tag of D12) and hands the composed mail here; a kept mail counts
//! as sent. Memory is bounded twice, oldest dropped first: by `email.capture_capacity` mails,
//! and by [`MAX_BYTES`] of text, since one mail of a tag group may carry many notifications.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The most bytes (headers and both parts) the capture holds together.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

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
    max_bytes: usize,
    next_id: AtomicU64,
    /// The mails, oldest first, and their bytes together.
    ring: Mutex<(VecDeque<CapturedMail>, usize)>,
}

impl CapturedMail {
    /// The bytes this mail holds (its strings; the fixed part is not counted).
    pub fn bytes(&self) -> usize {
        self.text.len()
            + self.html.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl MailCapture {
    /// A ring of at most `capacity` mails (0 keeps none).
    pub fn new(capacity: usize) -> MailCapture {
        MailCapture::with_bytes(capacity, MAX_BYTES)
    }

    /// A ring of at most `capacity` mails and `max_bytes` bytes; a single larger mail is still
    /// kept, alone.
    pub fn with_bytes(capacity: usize, max_bytes: usize) -> MailCapture {
        MailCapture {
            capacity,
            max_bytes,
            next_id: AtomicU64::new(1),
            ring: Mutex::new((VecDeque::with_capacity(capacity.min(1024)), 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<CapturedMail>, usize)> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `mail` (its `id` is assigned here), dropping the oldest past the capacity.
    /// Returns the id.
    pub fn push(&self, mut mail: CapturedMail) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        mail.id = id;
        if self.capacity == 0 {
            return id;
        }
        let size = mail.bytes();
        let mut guard = self.lock();
        let (ring, bytes) = &mut *guard;
        while ring.len() >= self.capacity || (!ring.is_empty() && *bytes + size > self.max_bytes) {
            if let Some(old) = ring.pop_front() {
                *bytes -= old.bytes();
            }
        }
        *bytes += size;
        ring.push_back(mail);
        id
    }

    /// The kept mails, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<CapturedMail> {
        self.lock().0.iter().rev().take(limit).cloned().collect()
    }

    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.0.clear();
        guard.1 = 0;
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
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

    #[test]
    fn keeps_within_the_byte_budget_too() {
        let big = |u| CapturedMail {
            text: "x".repeat(400),
            ..mail(u)
        };
        let c = MailCapture::with_bytes(100, 1000);
        for u in 1..=5 {
            c.push(big(u));
        }
        let kept: Vec<i64> = c.list(10).iter().map(|m| m.user_id).collect();
        assert_eq!(kept, [5, 4]);
        // One mail over the budget is kept alone.
        let huge = CapturedMail {
            text: "x".repeat(5000),
            ..mail(6)
        };
        c.push(huge);
        assert_eq!(c.len(), 1);
        c.push(big(7));
        assert_eq!(c.len(), 1);
        c.clear();
        c.push(big(8));
        c.push(big(9));
        assert_eq!(c.len(), 2);
    }
}
