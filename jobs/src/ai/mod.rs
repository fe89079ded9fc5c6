//! The AI family: the payload of `ai.hints`, its prompt (a versioned minijinja template), the
//! JSON Schema of the reply and its check, what a provider's HTTP reply means, and the leak
//! check that keeps a hint from stating the answer; the payload of `ai.evaluate`, which answers
//! it grades (`evaluate`), and its prompt and reply (`grading`). Talking to the provider is the
//! daemon's (src/families/ai/).

pub mod budget;
pub mod evaluate;
pub mod grading;
pub mod leak;
mod payloads;
pub mod prompt;
pub mod reply;

pub use evaluate::AiEvaluate;
pub use payloads::{AiHints, Answer, HintQuestion, QuestionOption, QuestionType};
pub use prompt::{PROMPT_VERSION, Prompt, cache_key};
pub use reply::{Hints, InvalidReply};
