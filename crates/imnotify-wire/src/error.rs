//! The error catalogue: every Bitrix24 error code imnotify can produce, with its description
//! and HTTP status (DECISIONS P4, spec §8), and [`ErrorCode`], the same codes as a Rust enum for
//! clients that match on them.
//!
//! ```
//! use imnotify_wire::error::{ApiError, ErrorCode};
//!
//! let e = ApiError::query_limit_exceeded();
//! assert_eq!((e.code, e.status), ("QUERY_LIMIT_EXCEEDED", 503));
//! assert_eq!(ErrorCode::from_code(e.code), ErrorCode::QueryLimitExceeded);
//! assert!(ErrorCode::QueryLimitExceeded.is_limit());
//! ```

use std::borrow::Cow;

/// An error answer: `{"error": code, "error_description": description}` with `status`.
///
/// Made by the constructor of its catalogue entry, e.g. `ApiError::message_empty()`:
///
/// ```
/// let e = imnotify_wire::error::ApiError::message_empty();
/// assert_eq!(e.to_string(), "MESSAGE_EMPTY (400): Message can't be empty");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The `error` member: a catalogue code (case matters: `ACCESS_DENIED` and `access_denied`
    /// are different codes).
    pub code: &'static str,
    /// The `error_description` member.
    pub description: Cow<'static, str>,
    /// The HTTP status of the answer.
    pub status: u16,
}

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $name:ident => ($code:literal, $status:literal, $desc:literal); )*) => {
        impl ApiError {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\n`", $code, "`, HTTP ", $status, ": \"", $desc, "\"")]
                #[doc = concat!(
                    "\n\n```\nlet e = imnotify_wire::error::ApiError::", stringify!($name), "();\n",
                    "assert_eq!((e.code, e.status), (\"", $code, "\", ", $status, "));\n```"
                )]
                pub fn $name() -> ApiError {
                    ApiError { code: $code, description: Cow::Borrowed($desc), status: $status }
                }
            )*
        }

        /// Every catalogued entry as (code, HTTP status, description), for documentation and
        /// tests. A code may appear more than once with another description or status.
        ///
        /// ```
        /// assert!(imnotify_wire::error::CATALOGUE.iter().any(|e| e.0 == "expired_token"));
        /// ```
        pub const CATALOGUE: &[(&str, u16, &str)] = &[ $( ($code, $status, $desc), )* ];
    };
}

catalogue! {
    method_not_found => ("ERROR_METHOD_NOT_FOUND", 404, "Method not found!");
    no_auth_found => ("NO_AUTH_FOUND", 401, "Wrong authorization data");
    invalid_credentials => ("INVALID_CREDENTIALS", 403, "Invalid request credentials");
    /// The webhook flavour of the message; OAuth tokens get "... provided by the access token".
    insufficient_scope_webhook => ("insufficient_scope", 403, "The request requires higher privileges than provided by the webhook token");
    insufficient_scope_token => ("insufficient_scope", 403, "The request requires higher privileges than provided by the access token");
    invalid_token => ("invalid_token", 401, "The access token provided is invalid");
    expired_token => ("expired_token", 401, "The access token provided has expired");
    https_required => ("INVALID_REQUEST", 400, "Https required.");
    application_not_found => ("APPLICATION_NOT_FOUND", 401, "Application not found");
    user_access_error => ("user_access_error", 403, "The user does not have access to the application.");
    authorization_error => ("authorization_error", 401, "Unable to authorize user");
    /// A `sessid` without a signed-in browser session.
    session_user_not_authorized => ("access_denied", 401, "User not authorized");
    /// A `sessid` that does not match the session's CSRF token.
    session_failed => ("session_failed", 401, "Sessid check failed");
    app_context_required => ("ACCESS_DENIED", 403, "Access denied! Application context required");
    /// Token endpoint: unknown client or wrong secret.
    invalid_client => ("invalid_client", 401, "Invalid client credentials");
    /// Token endpoint: code or refresh token unknown, used, expired or another client's.
    invalid_grant => ("invalid_grant", 400, "Invalid grant");
    /// Token endpoint: a required parameter is missing.
    invalid_request => ("invalid_request", 400, "Invalid request");
    unsupported_grant_type => ("unsupported_grant_type", 400, "Unsupported grant type");
    /// Token endpoint over plain HTTP while `require_https` is on: the OAuth flavour of P7.
    oauth_https_required => ("invalid_request", 400, "Https required.");
    wrong_auth_type => ("WRONG_AUTH_TYPE", 403, "Access for this method not allowed by session authorization.");
    user_id_empty => ("USER_ID_EMPTY", 400, "User ID can't be empty");
    message_empty => ("MESSAGE_EMPTY", 400, "Message can't be empty");
    attach_oversize => ("ATTACH_OVERSIZE", 400, "You have exceeded the maximum allowable size of attach");
    attach_error => ("ATTACH_ERROR", 400, "Incorrect attach params");
    last_id_and_last_type => ("LAST_ID_AND_LAST_TYPE", 400, "Parameters LAST_ID and LAST_TYPE should be used together.");
    last_id_string => ("LAST_ID_STRING", 400, "Last notification ID can't be string");
    /// im.notify.delete without anything to delete by.
    params_error => ("PARAMS_ERROR", 400, "Incorrect params");
    params_error_ids => ("PARAMS_ERROR", 400, "No IDS param or it is not an array");
    /// im.notify.delete by tag when neither an OAuth client id nor `CLIENT_ID` names the namespace.
    access_denied_client_id => ("ACCESS_DENIED", 403, "Access denied! Client ID not specified");
    /// The source's spelling ("less then"), which clients may match on (§9 #16).
    search_text_error => ("SEARCH_TEXT_ERROR", 400, "SEARCH_TEXT can't be less then 3 symbols");
    id_error => ("ID_ERROR", 400, "Notification ID can't be empty");
    answer_text_error => ("ANSWER_TEXT_ERROR", 400, "ANSWER_TEXT can't be empty");
    /// Two spaces, as in the source.
    notify_value_error => ("NOTIFY_VALUE_ERROR", 400, "Notification Value  can't be empty");
    /// im.user.get with an `ID` that is not a positive number.
    user_id_empty_im => ("ID_EMPTY", 400, "User ID can't be empty");
    /// The source's wording.
    user_not_exists => ("USER_NOT_EXISTS", 400, "User is not exists");
    internal => ("INTERNAL_SERVER_ERROR", 500, "Internal server error");
    /// The leaky bucket of (client IP, credential) is full (P8).
    query_limit_exceeded => ("QUERY_LIMIT_EXCEEDED", 503, "Too many requests");
    /// Too many open event streams, for the user or for the server.
    overload_limit => ("OVERLOAD_LIMIT", 503, "Too many open event streams");
    /// The (credential, method) pair used more handler time than allowed in ten minutes (P9).
    operation_time_limit => ("OPERATION_TIME_LIMIT", 429, "Method is blocked due to operation time limit.");
    /// Inside a batch only, per command: the statuses are the documentation's, never sent.
    batch_length_exceeded => ("ERROR_BATCH_LENGTH_EXCEEDED", 400, "Max batch length exceeded");
    /// The whole batch: its results and the references to them passed
    /// `limits.batch_max_answer_bytes` (issue 10; not a Bitrix24 code).
    batch_answer_too_large => ("ERROR_BATCH_ANSWER_TOO_LARGE", 400, "The batch answer would be larger than the server allows");
    batch_method_not_allowed => ("ERROR_BATCH_METHOD_NOT_ALLOWED", 405, "Method is not allowed for batch usage");
    /// The request body (or URL, or headers) is larger than the configured limit.
    request_too_large => ("ERROR_REQUEST_TOO_LARGE", 413, "Request entity is too large");
    /// The path plus query string is longer than `limits.max_url_bytes`.
    url_too_long => ("ERROR_REQUEST_TOO_LARGE", 414, "Request URI is too long");
    /// The body did not arrive within `limits.body_read_timeout_secs`.
    request_timeout => ("REQUEST_TIMEOUT", 408, "The request body was not received in time");
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal $kind:ident; )*) => {
        /// One variant per distinct `error` code of the [`CATALOGUE`] and of spec §8 (codes only
        /// a Bitrix24 portal sends included), and [`ErrorCode::Other`] for any other code a real
        /// portal may send (Bitrix24 has many).
        ///
        /// ```
        /// use imnotify_wire::error::ErrorCode;
        ///
        /// assert_eq!(ErrorCode::from_code("expired_token"), ErrorCode::ExpiredToken);
        /// assert_eq!(ErrorCode::ExpiredToken.as_str(), "expired_token");
        /// assert_eq!(ErrorCode::from_code("NEW_CODE"), ErrorCode::Other("NEW_CODE".into()));
        /// ```
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* #[doc = concat!("`", $code, "`")] $variant, )*
            /// A code outside the catalogue, as received.
            Other(String),
        }

        impl ErrorCode {
            /// The code as it appears in the `error` member. Case-sensitive.
            ///
            /// ```
            /// # use imnotify_wire::error::ErrorCode;
            /// assert_eq!(ErrorCode::from_code("ACCESS_DENIED").as_str(), "ACCESS_DENIED");
            /// ```
            pub fn from_code(code: &str) -> ErrorCode {
                match code {
                    $( $code => ErrorCode::$variant, )*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }

            /// The `error` member's text.
            ///
            /// ```
            /// # use imnotify_wire::error::ErrorCode;
            /// assert_eq!(ErrorCode::MessageEmpty.as_str(), "MESSAGE_EMPTY");
            /// ```
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorCode::$variant => $code, )*
                    ErrorCode::Other(s) => s,
                }
            }

            /// What kind of failure the code reports.
            ///
            /// ```
            /// # use imnotify_wire::error::{ErrorCode, ErrorKind};
            /// assert_eq!(ErrorCode::InvalidToken.kind(), ErrorKind::Auth);
            /// ```
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $( ErrorCode::$variant => ErrorKind::$kind, )*
                    ErrorCode::Other(_) => ErrorKind::Method,
                }
            }
        }
    };
}

/// The three kinds of error answer: the credential, a limit, or the call itself.
///
/// ```
/// # use imnotify_wire::error::{ErrorCode, ErrorKind};
/// assert_eq!(ErrorCode::OperationTimeLimit.kind(), ErrorKind::Limit);
/// assert_eq!(ErrorCode::UserIdEmpty.kind(), ErrorKind::Method);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The credential is missing, wrong, expired, lacks the scope or needs HTTPS.
    Auth,
    /// A rate, operating-time, size or stream limit.
    Limit,
    /// The server refused the call's parameters, or failed running it.
    Method,
}

codes! {
    MethodNotFound => "ERROR_METHOD_NOT_FOUND" Method;
    NoAuthFound => "NO_AUTH_FOUND" Auth;
    InvalidCredentials => "INVALID_CREDENTIALS" Auth;
    InsufficientScope => "insufficient_scope" Auth;
    InvalidToken => "invalid_token" Auth;
    ExpiredToken => "expired_token" Auth;
    /// HTTPS required (P7).
    InvalidRequest => "INVALID_REQUEST" Auth;
    ApplicationNotFound => "APPLICATION_NOT_FOUND" Auth;
    UserAccessError => "user_access_error" Auth;
    AuthorizationError => "authorization_error" Auth;
    /// A browser session that is not signed in.
    SessionAccessDenied => "access_denied" Auth;
    SessionFailed => "session_failed" Auth;
    AccessDenied => "ACCESS_DENIED" Method;
    InvalidClient => "invalid_client" Auth;
    InvalidGrant => "invalid_grant" Auth;
    /// The token endpoint's lower-case code.
    OAuthInvalidRequest => "invalid_request" Auth;
    UnsupportedGrantType => "unsupported_grant_type" Auth;
    WrongAuthType => "WRONG_AUTH_TYPE" Auth;
    UserIdEmpty => "USER_ID_EMPTY" Method;
    MessageEmpty => "MESSAGE_EMPTY" Method;
    AttachOversize => "ATTACH_OVERSIZE" Limit;
    AttachError => "ATTACH_ERROR" Method;
    LastIdAndLastType => "LAST_ID_AND_LAST_TYPE" Method;
    LastIdString => "LAST_ID_STRING" Method;
    ParamsError => "PARAMS_ERROR" Method;
    SearchTextError => "SEARCH_TEXT_ERROR" Method;
    IdError => "ID_ERROR" Method;
    AnswerTextError => "ANSWER_TEXT_ERROR" Method;
    NotifyValueError => "NOTIFY_VALUE_ERROR" Method;
    IdEmpty => "ID_EMPTY" Method;
    UserNotExists => "USER_NOT_EXISTS" Method;
    InternalServerError => "INTERNAL_SERVER_ERROR" Method;
    QueryLimitExceeded => "QUERY_LIMIT_EXCEEDED" Limit;
    OverloadLimit => "OVERLOAD_LIMIT" Limit;
    OperationTimeLimit => "OPERATION_TIME_LIMIT" Limit;
    BatchLengthExceeded => "ERROR_BATCH_LENGTH_EXCEEDED" Limit;
    BatchAnswerTooLarge => "ERROR_BATCH_ANSWER_TOO_LARGE" Limit;
    BatchMethodNotAllowed => "ERROR_BATCH_METHOD_NOT_ALLOWED" Method;
    RequestTooLarge => "ERROR_REQUEST_TOO_LARGE" Limit;
    RequestTimeout => "REQUEST_TIMEOUT" Limit;
    // Codes a Bitrix24 portal or its OAuth server sends and imnotify never does (spec §8.1,
    // §7.1), so that a client of a real portal can match them too.
    /// The portal could not reach its authorisation server (OAuth).
    ConnectionError => "CONNECTION_ERROR" Auth;
    /// The portal was deleted or closed.
    PortalDeleted => "PORTAL_DELETED" Auth;
    /// An administrator has yet to confirm the application's access to the method.
    MethodConfirmWaiting => "METHOD_CONFIRM_WAITING" Auth;
    /// An administrator refused the application access to the method.
    MethodConfirmDenied => "METHOD_CONFIRM_DENIED" Auth;
    /// The token endpoint: the application's plan has run out.
    PaymentRequired => "PAYMENT_REQUIRED" Auth;
    /// The token endpoint: a scope the application does not have.
    InvalidScope => "invalid_scope" Auth;
    /// A generic method failure ("SQL query error!" for a database error).
    ErrorCore => "ERROR_CORE" Method;
    /// A bad argument; the answer names it in `argument`.
    ErrorArgument => "ERROR_ARGUMENT" Method;
    /// The answer could not be encoded (sent with HTTP 200).
    WrongEncoding => "WRONG_ENCODING" Method;
    UnexpectedAnswer => "ERROR_UNEXPECTED_ANSWER" Method;
    ManifestIsNotAvailable => "ERROR_MANIFEST_IS_NOT_AVAILABLE" Method;
    InternalWrongTransport => "INTERNAL_WRONG_TRANSPORT" Method;
    InternalWrongHandlerClass => "INTERNAL_WRONG_HANDLER_CLASS" Method;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorKind {
    /// True for [`ErrorKind::Limit`].
    ///
    /// ```
    /// assert!(imnotify_wire::error::ErrorKind::Limit.is_limit());
    /// ```
    pub fn is_limit(self) -> bool {
        self == ErrorKind::Limit
    }
}

impl ErrorCode {
    /// Shorthand for `self.kind().is_limit()`.
    ///
    /// ```
    /// assert!(imnotify_wire::error::ErrorCode::OverloadLimit.is_limit());
    /// ```
    pub fn is_limit(&self) -> bool {
        self.kind().is_limit()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.description)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_spec_statuses() {
        let find = |code: &str| {
            CATALOGUE
                .iter()
                .find(|(c, _, _)| *c == code)
                .map(|(_, s, _)| *s)
        };
        assert_eq!(find("NO_AUTH_FOUND"), Some(401));
        assert_eq!(find("INVALID_CREDENTIALS"), Some(403));
        assert_eq!(find("insufficient_scope"), Some(403));
        assert_eq!(find("INVALID_REQUEST"), Some(400));
        assert_eq!(find("ERROR_METHOD_NOT_FOUND"), Some(404));
        assert_eq!(find("WRONG_AUTH_TYPE"), Some(403));
        assert_eq!(find("ATTACH_OVERSIZE"), Some(400));
        assert_eq!(find("ACCESS_DENIED"), Some(403));
        assert_eq!(find("PARAMS_ERROR"), Some(400));
        assert_eq!(find("LAST_ID_STRING"), Some(400));
        assert_eq!(find("QUERY_LIMIT_EXCEEDED"), Some(503));
        assert_eq!(find("OPERATION_TIME_LIMIT"), Some(429));
    }

    #[test]
    fn every_code_of_the_spec_catalogue_has_its_variant() {
        // Spec §8.1 and §8.2, and the OAuth server's codes of §7.1.
        for code in [
            "ERROR_METHOD_NOT_FOUND",
            "NO_AUTH_FOUND",
            "expired_token",
            "invalid_token",
            "insufficient_scope",
            "INVALID_CREDENTIALS",
            "INVALID_REQUEST",
            "OVERLOAD_LIMIT",
            "ACCESS_DENIED",
            "user_access_error",
            "authorization_error",
            "APPLICATION_NOT_FOUND",
            "CONNECTION_ERROR",
            "access_denied",
            "session_failed",
            "WRONG_AUTH_TYPE",
            "QUERY_LIMIT_EXCEEDED",
            "OPERATION_TIME_LIMIT",
            "ERROR_BATCH_LENGTH_EXCEEDED",
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "PORTAL_DELETED",
            "INTERNAL_SERVER_ERROR",
            "ERROR_UNEXPECTED_ANSWER",
            "ERROR_MANIFEST_IS_NOT_AVAILABLE",
            "METHOD_CONFIRM_WAITING",
            "METHOD_CONFIRM_DENIED",
            "ERROR_CORE",
            "ERROR_ARGUMENT",
            "WRONG_ENCODING",
            "INTERNAL_WRONG_TRANSPORT",
            "INTERNAL_WRONG_HANDLER_CLASS",
            "PAYMENT_REQUIRED",
            "USER_ID_EMPTY",
            "MESSAGE_EMPTY",
            "ATTACH_OVERSIZE",
            "ATTACH_ERROR",
            "PARAMS_ERROR",
            "LAST_ID_AND_LAST_TYPE",
            "LAST_ID_STRING",
            "SEARCH_TEXT_ERROR",
            "ID_ERROR",
            "ANSWER_TEXT_ERROR",
            "NOTIFY_VALUE_ERROR",
            "invalid_request",
            "invalid_client",
            "invalid_scope",
            "invalid_grant",
        ] {
            let typed = ErrorCode::from_code(code);
            assert!(!matches!(typed, ErrorCode::Other(_)), "{code}");
            assert_eq!(typed.as_str(), code);
        }
        assert_eq!(ErrorCode::PaymentRequired.kind(), ErrorKind::Auth);
    }

    #[test]
    fn every_catalogued_code_has_its_variant() {
        for (code, _, _) in CATALOGUE {
            let typed = ErrorCode::from_code(code);
            assert!(!matches!(typed, ErrorCode::Other(_)), "{code}");
            assert_eq!(typed.as_str(), *code);
        }
    }
}
