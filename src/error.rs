//! The error catalogue: every Bitrix24 error code this server can produce, with its description
//! and HTTP status (DECISIONS P4, spec §8). Kept free of axum so the domain can use it too.

use std::borrow::Cow;

/// An error answer: `{"error": code, "error_description": description}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub description: Cow<'static, str>,
    pub status: u16,
}

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $name:ident => ($code:literal, $status:literal, $desc:literal); )*) => {
        impl ApiError {
            $(
                $(#[$doc])*
                pub fn $name() -> ApiError {
                    ApiError { code: $code, description: Cow::Borrowed($desc), status: $status }
                }
            )*
        }

        /// Every catalogued code, for documentation and tests.
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
}
