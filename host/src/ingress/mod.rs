//! The HTTP ingress: a stage fed by HTTP requests instead of a topic. It validates a request
//! against its route, answers repeats from its answer book, runs the stage's plugin and
//! publishes the events before answering; exactly-once, events and answers are committed
//! together by a group-commit loop.

mod answer_book;
mod answer_log;
mod group_commit;
mod requests;
mod transactional_answers;

pub use answer_book::{AnswerBook, LocalAnswers, Published};
pub use group_commit::{InProcessFactory, IngressPool, ProducerFactory};
pub use requests::{Ingress, IngressRoute, RouteIngress};
pub use transactional_answers::TransactionalAnswers;
