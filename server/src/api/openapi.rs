//! `/v2/openapi.json`, generated from the handlers and types.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::Api;

#[derive(OpenApi)]
#[openapi(
    info(title = "tete", description = "Self-hosted real-time engine for conversational video AI"),
    paths(
        super::personas::create, super::personas::get_one, super::personas::list_all, super::personas::patch, super::personas::delete,
        super::replicas::create, super::replicas::get_one, super::replicas::list_all, super::replicas::rename, super::replicas::delete,
        super::conversations::create, super::conversations::get_one, super::conversations::list_all, super::conversations::end,
        super::conversations::delete, super::webhooks::list_all, super::audio::transcriptions,
        super::speech::speech, super::speech::list_voices,
    ),
    components(schemas(super::ErrorBody, super::personas::Persona, super::replicas::CreateReplica, super::conversations::CreateConversation,
        super::audio::TranscriptionVerbose, super::speech::SpeechRequest, super::speech::VoiceInfo)),
    modifiers(&ApiKeyAuth),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))));
    }
}

async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

pub fn routes() -> Router<Api> {
    Router::new().route("/openapi.json", get(document))
}
