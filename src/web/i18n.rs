//! The texts of the notification center (and of e-mail) in each language, in one place per
//! language. To add a language: a `Lang` variant, its `code`, and a `Texts` value.

/// A language of the user interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

/// The cookie that keeps the language chosen with the switch.
pub const LANG_COOKIE: &str = "imnotify_lang";

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ru];

    /// The BCP 47 code (`<html lang>`, the cookie value).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Lang::ALL.into_iter().find(|l| l.code() == primary)
    }

    /// The language for a request: the switch's cookie, else the first supported language of
    /// `Accept-Language` by its q-value (RFC 9110 §12.5.4), else English.
    pub fn negotiate(cookie: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(l) = cookie.and_then(Lang::from_code) {
            return l;
        }
        let mut best: Option<(f32, Lang)> = None;
        for item in accept_language.unwrap_or("").split(',').take(32) {
            let mut parts = item.split(';');
            let Some(l) = parts.next().and_then(Lang::from_code) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, l));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Ru => &RU,
        }
    }
}

/// Every text the page and the e-mail show.
pub struct Texts {
    pub language_name: &'static str,
    pub title: &'static str,
    pub unread: &'static str,
    pub empty: &'static str,
    pub more: &'static str,
    pub mark_read: &'static str,
    pub mark_unread: &'static str,
    pub read_all: &'static str,
    pub delete: &'static str,
    pub reply: &'static str,
    pub reply_label: &'static str,
    pub send: &'static str,
    pub system: &'static str,
    pub system_notification: &'static str,
    pub settings: &'static str,
    pub language: &'static str,
    pub apply: &'static str,
    pub desktop: &'static str,
    pub desktop_enable: &'static str,
    pub desktop_on: &'static str,
    pub desktop_denied: &'static str,
    pub desktop_unsupported: &'static str,
    pub sign_out: &'static str,
    pub live: &'static str,
    pub offline: &'static str,
    pub new_notification: &'static str,
    pub removed: &'static str,
    pub done: &'static str,
    pub failed: &'static str,
    pub just_now: &'static str,
    /// `{n}` is replaced by the number.
    pub minutes_ago: &'static str,
    pub hours_ago: &'static str,
    pub days_ago: &'static str,
    pub file: &'static str,
    pub email_notifications: &'static str,
    pub on: &'static str,
    pub off: &'static str,
    pub turn_on: &'static str,
    pub turn_off: &'static str,
}

pub static EN: Texts = Texts {
    language_name: "English",
    title: "Notifications",
    unread: "unread",
    empty: "No notifications yet.",
    more: "Show older",
    mark_read: "Mark read",
    mark_unread: "Mark unread",
    read_all: "Mark all read",
    delete: "Delete",
    reply: "Reply",
    reply_label: "Your reply",
    send: "Send",
    system: "System",
    system_notification: "System notification",
    settings: "Settings",
    language: "Language",
    apply: "Apply",
    desktop: "Desktop notifications",
    desktop_enable: "Enable desktop notifications",
    desktop_on: "Desktop notifications are on.",
    desktop_denied: "The browser blocks notifications for this site.",
    desktop_unsupported: "This browser has no desktop notifications.",
    sign_out: "Sign out",
    live: "Live",
    offline: "Reconnecting…",
    new_notification: "New notification",
    removed: "Notification removed",
    done: "Done",
    failed: "That did not work. Please try again.",
    just_now: "just now",
    minutes_ago: "{n} min ago",
    hours_ago: "{n} h ago",
    days_ago: "{n} d ago",
    file: "File",
    email_notifications: "E-mail notifications",
    on: "on",
    off: "off",
    turn_on: "Turn on",
    turn_off: "Turn off",
};

pub static RU: Texts = Texts {
    language_name: "Русский",
    title: "Уведомления",
    unread: "непрочитанных",
    empty: "Уведомлений пока нет.",
    more: "Показать более ранние",
    mark_read: "Прочитано",
    mark_unread: "Не прочитано",
    read_all: "Прочитать все",
    delete: "Удалить",
    reply: "Ответить",
    reply_label: "Ваш ответ",
    send: "Отправить",
    system: "Система",
    system_notification: "Системное уведомление",
    settings: "Настройки",
    language: "Язык",
    apply: "Применить",
    desktop: "Уведомления на рабочем столе",
    desktop_enable: "Включить уведомления на рабочем столе",
    desktop_on: "Уведомления на рабочем столе включены.",
    desktop_denied: "Браузер запретил уведомления для этого сайта.",
    desktop_unsupported: "Этот браузер не умеет показывать уведомления.",
    sign_out: "Выйти",
    live: "Онлайн",
    offline: "Переподключение…",
    new_notification: "Новое уведомление",
    removed: "Уведомление удалено",
    done: "Готово",
    failed: "Не получилось. Попробуйте ещё раз.",
    just_now: "только что",
    minutes_ago: "{n} мин назад",
    hours_ago: "{n} ч назад",
    days_ago: "{n} дн назад",
    file: "Файл",
    email_notifications: "Уведомления по e-mail",
    on: "включены",
    off: "выключены",
    turn_on: "Включить",
    turn_off: "Выключить",
};

impl Texts {
    /// "5 min ago" for an age in seconds.
    pub fn ago(&self, seconds: i64) -> String {
        let (pattern, n) = match seconds.max(0) {
            s if s < 60 => return self.just_now.to_owned(),
            s if s < 3600 => (self.minutes_ago, s / 60),
            s if s < 86_400 => (self.hours_ago, s / 3600),
            s => (self.days_ago, s / 86_400),
        };
        pattern.replace("{n}", &n.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(Lang::negotiate(None, None), Lang::En);
        assert_eq!(
            Lang::negotiate(None, Some("ru-RU,ru;q=0.9,en;q=0.8")),
            Lang::Ru
        );
        assert_eq!(
            Lang::negotiate(None, Some("de,en;q=0.5,ru;q=0.7")),
            Lang::Ru
        );
        assert_eq!(Lang::negotiate(None, Some("ru;q=0,en")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en"), Some("ru")), Lang::En);
        assert_eq!(Lang::negotiate(Some("xx"), Some("ru")), Lang::Ru);
        assert_eq!(EN.ago(130), "2 min ago");
        assert_eq!(RU.ago(7200), "2 ч назад");
    }
}
