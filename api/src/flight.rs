//! Result tables over Arrow Flight for programs (`xt serve --flight-listen`): `DoGet` with
//! a ticket `batch_id/table` and `ListFlights`, behind the same bearer tokens as the HTTP API
//! (the `authorization` header of each call). It forwards to the coordinator's own Flight
//! service, which is for workers and never faces users.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use xt_wire::StatusRequest;
use xt_wire::auth::Channel;
use xt_wire::batches_client::BatchesClient;

use crate::auth::{Caller, Role, Verifier};

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct FlightProxy {
    jobs: BatchesClient<Channel>,
    flight: FlightServiceClient<Channel>,
    verifier: Arc<Verifier>,
}

impl FlightProxy {
    pub fn new(channel: Channel, verifier: Arc<Verifier>) -> Self {
        FlightProxy {
            jobs: BatchesClient::new(channel.clone()),
            flight: FlightServiceClient::new(channel).max_decoding_message_size(256 << 20),
            verifier,
        }
    }

    pub fn service(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
    }

    fn caller<T>(&self, r: &Request<T>) -> Result<Caller, Status> {
        let header = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.verifier
            .caller(header)
            .map_err(Status::unauthenticated)
    }
}

#[tonic::async_trait]
impl FlightService for FlightProxy {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    /// A finished batch's table, `batch_id/table`; another tenant's batch is not found.
    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = self.caller(&r)?;
        let ticket = r.into_inner();
        let text = std::str::from_utf8(&ticket.ticket)
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8"))?;
        let batch: u64 = text
            .split_once('/')
            .and_then(|(b, _)| b.parse().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "ticket {} is not batch_id/table",
                    xt_wire::excerpt(text)
                ))
            })?;
        let status = self
            .jobs
            .clone()
            .status(StatusRequest { batch, wait_ms: 0 })
            .await?
            .into_inner();
        if !caller.sees(&status.tenant) {
            return Err(Status::not_found(format!("unknown batch {batch}")));
        }
        let stream = self.flight.clone().do_get(ticket).await?.into_inner();
        Ok(Response::new(stream.boxed()))
    }

    /// The tables of the caller's finished batches (an admin's: all of them).
    async fn list_flights(
        &self,
        r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let caller = self.caller(&r)?;
        let tenant = if caller.role == Role::Admin {
            ""
        } else {
            &caller.tenant
        };
        let stream = self
            .flight
            .clone()
            .list_flights(crate::serve::flight_criteria(tenant))
            .await?
            .into_inner();
        Ok(Response::new(stream.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: send the bearer token in the authorization header of each call",
        ))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("use ListFlights"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use ListFlights"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("use ListFlights"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::permission_denied("results are read-only here"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(futures::stream::empty().boxed()))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("no exchange"))
    }
}
