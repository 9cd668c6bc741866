//! Signal payloads decoded leniently.
//!
//! Other SDKs send the workflow's signals with their own JSON converters, which may write
//! `NaN`, `null` or a string where a number belongs. A typed signal input that fails to decode
//! fails the workflow task — on every replay, since the payload is in the history — and the
//! run is wedged for good. [`Lenient`] never fails to decode: a payload that is not the
//! expected shape becomes [`Lenient::Invalid`] with the reason, which the workflow logs and
//! ignores, as it ignores any other invalid signal.

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};
use temporalio_common::data_converters::{
    PayloadConversionError, SerializationContext, TemporalDeserializable, TemporalSerializable,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// A signal input: the expected value, or why the payload was not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    Valid(T),
    Invalid { reason: String },
}

impl<T: Serialize + 'static> TemporalSerializable for Lenient<T> {
    fn to_payload(&self, _: &SerializationContext<'_>) -> Result<Payload, PayloadConversionError> {
        let data = match self {
            Lenient::Valid(value) => serde_json::to_vec(value),
            Lenient::Invalid { reason } => {
                serde_json::to_vec(&serde_json::json!({ "invalid": reason }))
            }
        }
        .map_err(|e| PayloadConversionError::EncodingError(e.into()))?;
        Ok(json_payload(data))
    }
}

impl<T: DeserializeOwned + 'static> TemporalDeserializable for Lenient<T> {
    fn from_payloads(
        _: &SerializationContext<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Self, PayloadConversionError> {
        let decoded = match payloads.as_slice() {
            [payload] => serde_json::from_slice::<T>(&payload.data).map_err(|e| e.to_string()),
            other => Err(format!("expected one payload, got {}", other.len())),
        };
        Ok(match decoded {
            Ok(value) => Lenient::Valid(value),
            Err(reason) => Lenient::Invalid { reason },
        })
    }

    fn from_payload(
        context: &SerializationContext<'_>,
        payload: Payload,
    ) -> Result<Self, PayloadConversionError> {
        Self::from_payloads(context, vec![payload])
    }
}

/// A payload in the SDKs' default JSON encoding.
pub fn json_payload(data: Vec<u8>) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_owned(), b"json/plain".to_vec())]),
        data,
        ..Default::default()
    }
}
