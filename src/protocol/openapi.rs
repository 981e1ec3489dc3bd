//! `GET /openapi.json`: an OpenAPI 3.0 description of every served REST method, built from the
//! method registry so that a method added on any branch is described without touching this file.
//!
//! Each method appears twice, as a client can call it: `/rest/{method}` with a credential
//! (Bearer header or `auth` parameter), and the webhook form `/rest/{user_id}/{webhook_code}/{method}`.
//! Parameter schemas are as loose as the server is: PHP coercions accept almost any type, so a
//! schema stricter than the server would describe a different API. Known methods list their
//! parameters; the others take a free-form object.

use serde_json::{json, Map, Value as Json};

use crate::state::{MethodSpec, Registry};

/// Any JSON value: what a PHP-coerced parameter accepts.
fn any() -> Json {
    json!({})
}

/// The parameters of the methods whose handlers read named parameters.
fn params_schema(method: &str) -> Json {
    let notify = || {
        json!({
            "USER_ID": {"type": "integer", "minimum": 1,
                        "description": "Recipient. Read with PHP intval, so \"12abc\" is 12 too."},
            "TO": {"description": "Alias of USER_ID that overrides it."},
            "MESSAGE": {"type": "string", "minLength": 1,
                        "description": "Text with BB codes; #BR# is a line break."},
            "MESSAGE_OUT": {"type": "string", "description": "Text for e-mail and push."},
            "TAG": {"description": "Replaces the recipient's earlier notification with the same tag (D4)."},
            "SUB_TAG": any(),
            "CLIENT_ID": {"description": "Webhook calls: the tag namespace (D3)."},
            "ATTACH": {"description": "Rich attachment (§2.6): short or full form, or a JSON string."},
        })
    };
    let required = match method {
        "im.notify.system.add" | "im.notify.personal.add" | "im.notify" => {
            json!(["USER_ID", "MESSAGE"])
        }
        _ => json!([]),
    };
    let properties = match method {
        "im.notify.system.add" | "im.notify.personal.add" => notify(),
        "im.notify" => {
            let mut p = notify();
            p["TYPE"] =
                json!({"type": "string", "description": "SYSTEM, or anything else for personal"});
            p
        }
        "method.get" => json!({"name": {"type": "string"}}),
        _ => json!({}),
    };
    let mut schema =
        json!({"type": "object", "properties": properties, "additionalProperties": true});
    if required.as_array().is_some_and(|r| !r.is_empty()) {
        schema["required"] = required;
    }
    schema
}

fn responses() -> Json {
    json!({
        "200": {
            "description": "The method's result with the time block (§5.1).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Success"}}}
        },
        "default": {
            "description": "An error envelope (§5.4) with the status of the error catalogue.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }
    })
}

fn operation(spec: &MethodSpec, webhook: bool, post: bool) -> Json {
    let scope = spec.scope.unwrap_or("global");
    let mut op = json!({
        "operationId": format!(
            "{}_{}_{}",
            spec.name.replace('.', "_"),
            if webhook { "webhook" } else { "rest" },
            if post { "post" } else { "get" }
        ),
        "summary": spec.name,
        "description": format!("Scope: {scope}."),
        "tags": [scope],
        "responses": responses(),
    });
    if !webhook {
        op["security"] = json!([{"bearer": []}, {"auth": []}]);
    }
    let schema = params_schema(spec.name);
    if post {
        op["requestBody"] = json!({
            "required": false,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            }
        });
    } else {
        op["parameters"] = query_parameters(&schema);
    }
    op
}

/// The same parameters in the query string, for GET. Only scalar ones: bracket arrays such as
/// `ATTACH[0][MESSAGE]` have no faithful OpenAPI spelling.
fn query_parameters(schema: &Json) -> Json {
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    let params: Vec<Json> = schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .filter(|(name, _)| *name != "ATTACH")
                .map(|(name, prop)| {
                    let mut prop = prop.clone();
                    if prop.get("type").is_none() {
                        prop["type"] = json!("string");
                    }
                    json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&json!(name)),
                        "schema": prop,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Json::Array(params)
}

fn webhook_parameters() -> Json {
    json!([
        {"name": "user_id", "in": "path", "required": true,
         "description": "The webhook owner's user id.",
         "schema": {"type": "integer", "minimum": 1}},
        {"name": "webhook_code", "in": "path", "required": true,
         "description": "The webhook's secret code.",
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9]+$"}},
    ])
}

/// The whole document. `all_methods` is the registry, passed in so tests can check coverage.
pub fn document<'a>(methods: impl Iterator<Item = &'a MethodSpec>) -> Json {
    let mut paths = Map::new();
    for spec in methods {
        paths.insert(
            format!("/rest/{}", spec.name),
            json!({
                "get": operation(spec, false, false),
                "post": operation(spec, false, true),
            }),
        );
        paths.insert(
            format!("/rest/{{user_id}}/{{webhook_code}}/{}", spec.name),
            json!({
                "parameters": webhook_parameters(),
                "get": operation(spec, true, false),
                "post": operation(spec, true, true),
            }),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "imnotify",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Bitrix24 REST methods this server answers. Method names are \
                case-insensitive and take an optional .json suffix (.xml answers in XML, not \
                described here).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "An OAuth access token."},
                "auth": {"type": "apiKey", "in": "query", "name": "auth",
                         "description": "An OAuth access token as a parameter."},
            },
            "schemas": {
                "Time": {
                    "type": "object",
                    "required": ["start", "finish", "duration", "processing", "date_start",
                                 "date_finish", "operating", "operating_reset_at"],
                    "properties": {
                        "start": {"type": "number"},
                        "finish": {"type": "number"},
                        "duration": {"type": "number"},
                        "processing": {"type": "number"},
                        "date_start": {"type": "string"},
                        "date_finish": {"type": "string"},
                        "operating": {"type": "number"},
                        "operating_reset_at": {"type": "integer"},
                    },
                },
                "Success": {
                    "type": "object",
                    "required": ["result", "time"],
                    "properties": {
                        "result": {},
                        "next": {"type": "integer"},
                        "total": {"type": "integer"},
                        "time": {"$ref": "#/components/schemas/Time"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "error_description"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_description": {"type": "string"},
                    },
                },
            },
        },
    })
}

/// The served document of `registry`, built once.
pub fn served(registry: &Registry) -> &str {
    registry
        .openapi_cache()
        .get_or_init(|| document(registry.iter()).to_string())
}
