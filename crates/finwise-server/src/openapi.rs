//! Makes the generated OpenAPI document say what the server really does, for the answers that
//! come from shared code rather than from one handler: the tenant-id check (400), the bearer
//! check (401, 403), the body reader (408, 413, 422), the login and registration limits (429,
//! 503), and the error body, whose `detail` is a message or, for 422, FastAPI's list of errors.
//! `schemathesis` run against `/openapi.json` (docs/SECURITY.md) holds the document to it.

use utoipa::openapi::{
    path::Operation,
    schema::{ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type},
    ContentBuilder, OpenApi, RefOr, ResponseBuilder, Schema,
};

pub struct Accuracy;

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content =
        ContentBuilder::new().schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody")))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
}

/// `{"detail": string | [{type, loc, msg}]}`
fn error_body() -> Schema {
    let item = ObjectBuilder::new()
        .property("type", ObjectBuilder::new().schema_type(Type::String))
        .property("loc", ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
        .property("msg", ObjectBuilder::new().schema_type(Type::String))
        .required("msg");
    let detail = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).description(Some("what went wrong")))
        .item(ArrayBuilder::new().items(item).description(Some("422: one entry per invalid field")));
    Schema::Object(ObjectBuilder::new().property("detail", detail).required("detail").build())
}

/// What [`crate::names::name`] accepts, as a JSON-schema pattern: no control or invisible
/// characters, and at least one character that is not a space.
const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*[^\s\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF][^\u0000-\u001F\u007F-\u009F\u00AD\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]*$";

/// Sets the name pattern on the `name` property of every body that carries a user or tenant name.
fn name_patterns(c: &mut utoipa::openapi::Components) {
    for body in ["RegisterBody", "CreateTenantBody", "RenameBody"] {
        if let Some(RefOr::T(Schema::Object(obj))) = c.schemas.get_mut(body) {
            if let Some(RefOr::T(Schema::Object(name))) = obj.properties.get_mut("name") {
                name.pattern = Some(NAME_PATTERN.to_owned());
            }
        }
    }
}

impl utoipa::Modify for Accuracy {
    fn modify(&self, api: &mut OpenApi) {
        if let Some(c) = api.components.as_mut() {
            c.schemas.insert("ErrorBody".into(), RefOr::T(error_body()));
            name_patterns(c);
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
            for op in ops.into_iter().flatten() {
                // every path parameter named after a tenant is a canonical UUID
                let mut tenant_param = false;
                for p in op.parameters.iter_mut().flatten() {
                    if p.name == "id" || p.name == "tenant_id" {
                        p.schema = Some(RefOr::T(Schema::Object(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                                .build(),
                        )));
                        tenant_param = true;
                    }
                }
                if tenant_param {
                    add(op, "400", "the tenant id is not a canonical lowercase UUID");
                }
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add(op, "401", "no or invalid access token");
                    add(op, "403", "not a member (or not an owner) of the tenant");
                }
                if op.request_body.is_some() {
                    add(op, "400", "the request body could not be read");
                    add(op, "408", "the request body did not arrive within http_body_timeout");
                    add(op, "413", "the request body is larger than 2 MiB");
                    add(op, "422", "invalid body (FastAPI list form)");
                }
                match path.as_str() {
                    "/login" | "/token" | "/register" => {
                        add(op, "429", "too many attempts (Retry-After)");
                        add(op, "503", "every password-hashing slot is busy (Retry-After)");
                    }
                    "/ws_finwise/ws/{tenant_id}" => {
                        add(op, "429", "too many open connections for this user (Retry-After)");
                        add(op, "400", "not a WebSocket upgrade request, or the tenant id is not a canonical UUID");
                    }
                    "/tenants/{id}/members" | "/tenants/{id}/members/{user_id}" => {
                        add(op, "409", "the tenant would lose its last owner");
                    }
                    _ => {}
                }
                if path == "/token" {
                    add(op, "400", "unsupported grant_type");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_in_a_body_carries_the_name_rule() {
        let doc = serde_json::to_value(crate::http::openapi_document()).unwrap();
        for body in ["RegisterBody", "CreateTenantBody", "RenameBody"] {
            let name = &doc["components"]["schemas"][body]["properties"]["name"];
            assert_eq!(name["pattern"], super::NAME_PATTERN, "{body}: {name}");
            assert_eq!((name["minLength"].as_u64(), name["maxLength"].as_u64()), (Some(1), Some(200)), "{body}");
        }
        let detail = &doc["components"]["schemas"]["ErrorBody"]["properties"]["detail"];
        assert_eq!(detail["oneOf"].as_array().map(Vec::len), Some(2), "{detail}");
    }
}
