//! Command line (clap derive).

use crate::output::Format;
use clap::{ArgAction, Args, Parser, Subcommand};

/// The server when neither --server nor a kubeconfig names one (a plaintext
/// `apiserver --insecure`; a secure one is reached through its kubeconfig).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-lite",
    version,
    about = "kubectl-style CLI for kube-lite"
)]
pub struct Cli {
    /// apiserver address (default: the kubeconfig context's server)
    #[arg(long, global = true, env = "KUBE_LITE_SERVER")]
    pub server: Option<String>,
    /// kubeconfig file (default: KUBECONFIG, then ~/.kube/config)
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// kubeconfig context to use (default: its current-context)
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// bearer token (replaces the kubeconfig user's credentials)
    #[arg(long, global = true, env = "KUBE_LITE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate file (PEM) to trust the apiserver with
    #[arg(long, global = true)]
    pub certificate_authority: Option<String>,
    /// do not verify the apiserver's certificate (insecure: anyone in the middle can
    /// read and change everything)
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// namespace of the objects (default "default")
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a pod or a service from flags
    #[command(subcommand)]
    Create(CreateCommand),
    /// Create or update objects from Kubernetes manifests (YAML, multi-document, or JSON)
    Apply(ApplyArgs),
    /// List objects or show one
    Get(GetArgs),
    /// Show one object in detail
    Describe(DescribeArgs),
    /// Delete objects
    Delete(DeleteArgs),
    /// Print a container's logs
    Logs(LogsArgs),
    /// Run a command in a container (POD [-c CONTAINER] -- COMMAND [ARGS...])
    Exec(ExecArgs),
    /// Set the replicas of a Deployment or ReplicaSet
    Scale(ScaleArgs),
    /// Create a Service for a pod, deployment or service (its selector, its ports)
    Expose(ExposeArgs),
    /// Manage the rollout of a Deployment
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Change fields of workloads (image)
    #[command(subcommand)]
    Set(SetCommand),
    /// Update the labels of objects (KEY=VALUE to set, KEY- to remove)
    Label(MetaArgs),
    /// Update the annotations of objects (KEY=VALUE to set, KEY- to remove)
    Annotate(MetaArgs),
    /// Show or change the kubeconfig (view, get-contexts, use-context, current-context)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Container images of the nodes (the containerd runtime)
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Args)]
pub struct ExposeArgs {
    /// pod|deployment|service (or po, deploy, svc; or KIND/NAME)
    pub resource: String,
    pub name: Option<String>,
    /// the Service's port (default: the exposed object's first port)
    #[arg(long)]
    pub port: Option<i32>,
    /// the port (number or name) the pods serve on (default: --port)
    #[arg(long)]
    pub target_port: Option<String>,
    /// TCP or UDP
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// ClusterIP, NodePort or LoadBalancer
    #[arg(long = "type", default_value = "ClusterIP")]
    pub r#type: String,
    /// the Service's name (default: the exposed object's)
    #[arg(long = "name")]
    pub service_name: Option<String>,
    /// a label selector instead of the object's
    #[arg(long)]
    pub selector: Option<String>,
    /// ask for this ClusterIP ("None" for a headless service)
    #[arg(long = "cluster-ip")]
    pub cluster_ip: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// deployment/NAME, rs/NAME, or KIND NAME
    pub resource: String,
    pub names: Vec<String>,
    /// the new number of replicas
    #[arg(long)]
    pub replicas: i32,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout is complete
    Status(RolloutArgs),
    /// Show the revisions
    History(RolloutArgs),
    /// Go back to the previous (or --to-revision) template
    Undo(RolloutArgs),
    /// Restart every pod (a new rollout of the same template)
    Restart(RolloutArgs),
    /// Stop rolling out template changes
    Pause(RolloutArgs),
    /// Resume a paused rollout
    Resume(RolloutArgs),
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// deployment/NAME or deployment NAME
    pub resource: String,
    pub names: Vec<String>,
    /// undo: the revision to go back to (0 = the previous one); history: show one
    #[arg(long, default_value_t = 0)]
    pub to_revision: i64,
    /// history: the revision to show
    #[arg(long, default_value_t = 0)]
    pub revision: i64,
    /// status: give up after this long (e.g. 60s; 0 = wait forever)
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// status: wait (--watch=false prints the state once)
    #[arg(short = 'w', long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Set container images of a Deployment, ReplicaSet or pod template
    /// (`set image deployment/web web=whoami:v2`, `*=IMAGE` for every container)
    Image(SetImageArgs),
}

#[derive(Debug, Args)]
pub struct SetImageArgs {
    /// KIND/NAME, or KIND NAME, then CONTAINER=IMAGE...
    #[arg(required = true, num_args = 2..)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MetaArgs {
    /// KIND NAME... KEY=VALUE... KEY-..., or KIND/NAME KEY=VALUE
    #[arg(required = true, num_args = 1..)]
    pub args: Vec<String>,
    /// replace values that are already set
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the kubeconfig (secrets shown as DATA+OMITTED unless --raw)
    View {
        #[arg(long)]
        raw: bool,
    },
    /// List the contexts (the current one marked with *)
    GetContexts,
    /// Make a context the current-context
    UseContext { name: String },
    /// Print the current-context
    CurrentContext,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Load image archives (`docker save` output or OCI layouts, .tar) onto every node
    /// (or the nodes given with --node), as `kind load image-archive` does
    Load(ImageLoadArgs),
}

#[derive(Debug, Args)]
pub struct ImageLoadArgs {
    /// archive files
    #[arg(required = true)]
    pub files: Vec<String>,
    /// only these nodes (repeatable; default every node)
    #[arg(long = "node")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a pod with one container named after it (like `kubectl run`)
    #[command(visible_alias = "po")]
    Pod(CreatePodArgs),
    /// Create a service: `service clusterip|nodeport|loadbalancer NAME --tcp=80:8080`
    /// (as kubectl), or `service NAME --selector k=v --port 80:8080` (ClusterIP)
    #[command(visible_alias = "svc")]
    Service(CreateServiceCommand),
    /// Create a Deployment (apps/v1)
    #[command(visible_alias = "deploy")]
    Deployment(CreateDeploymentArgs),
    /// Create a Namespace
    #[command(visible_alias = "ns")]
    Namespace(CreateNamespaceArgs),
    /// Create a ConfigMap from literals and files
    #[command(visible_alias = "cm")]
    Configmap(CreateConfigMapArgs),
    /// Create a Secret (`secret generic NAME --from-literal k=v`)
    #[command(subcommand)]
    Secret(CreateSecretCommand),
}

#[derive(Debug, Args)]
pub struct CreateDeploymentArgs {
    pub name: String,
    /// container image (repeatable: one container per image)
    #[arg(long, required = true)]
    pub image: Vec<String>,
    /// number of replicas
    #[arg(short = 'r', long, default_value_t = 1)]
    pub replicas: i32,
    /// container port
    #[arg(long)]
    pub port: Option<i32>,
    /// the container's command (after `--`)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateNamespaceArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CreateConfigMapArgs {
    pub name: String,
    /// KEY=VALUE (repeatable)
    #[arg(long = "from-literal")]
    pub from_literal: Vec<String>,
    /// [KEY=]PATH: a file's content under its base name or KEY (repeatable)
    #[arg(long = "from-file")]
    pub from_file: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CreateSecretCommand {
    /// An Opaque (or --type) Secret from literals and files
    Generic(CreateSecretArgs),
}

#[derive(Debug, Args)]
pub struct CreateSecretArgs {
    pub name: String,
    /// KEY=VALUE (repeatable)
    #[arg(long = "from-literal")]
    pub from_literal: Vec<String>,
    /// [KEY=]PATH (repeatable)
    #[arg(long = "from-file")]
    pub from_file: Vec<String>,
    /// the Secret's type
    #[arg(long = "type", default_value = "Opaque")]
    pub r#type: String,
}

#[derive(Debug, Args)]
pub struct CreatePodArgs {
    pub name: String,
    /// container image
    #[arg(long)]
    pub image: String,
    /// labels: k=v,k2=v2
    #[arg(short = 'l', long, default_value = "")]
    pub labels: String,
    /// bind the pod to this node instead of letting the scheduler choose
    #[arg(long)]
    pub node: Option<String>,
    /// Always | OnFailure | Never
    #[arg(long, default_value = "Always")]
    pub restart: String,
    /// Always | IfNotPresent | Never (Kubernetes' default when empty)
    #[arg(long, default_value = "")]
    pub image_pull_policy: String,
    /// environment variable NAME=VALUE (repeatable)
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// container port (repeatable)
    #[arg(long = "port")]
    pub ports: Vec<i32>,
    /// the arguments after `--` are the container's command instead of its args
    #[arg(long)]
    pub command: bool,
    /// container arguments (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CreateServiceCommand {
    #[command(subcommand)]
    pub typed: Option<CreateServiceType>,
    #[command(flatten)]
    pub args: CreateServiceArgs,
}

/// kubectl's `create service <type>`.
#[derive(Debug, Subcommand)]
pub enum CreateServiceType {
    /// A ClusterIP service selecting app=NAME (`--clusterip None`: headless)
    Clusterip(CreateTypedServiceArgs),
    /// A NodePort service selecting app=NAME
    Nodeport(CreateTypedServiceArgs),
    /// A LoadBalancer service selecting app=NAME (served on the nodes' addresses)
    Loadbalancer(CreateTypedServiceArgs),
}

#[derive(Debug, Args)]
pub struct CreateTypedServiceArgs {
    pub name: String,
    /// PORT[:TARGET] (repeatable, comma-separated too); the port is named PORT-TARGET
    #[arg(long = "tcp", value_delimiter = ',')]
    pub tcp: Vec<String>,
    /// nodeport: the node port of the (first) port
    #[arg(long)]
    pub node_port: Option<i32>,
    /// clusterip: ask for this ClusterIP ("None" for a headless service)
    #[arg(long = "clusterip")]
    pub cluster_ip: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateServiceArgs {
    pub name: Option<String>,
    /// pods selected: k=v,k2=v2
    #[arg(long, required = true)]
    pub selector: Option<String>,
    /// PORT[:TARGET][/tcp|/udp] (repeatable); each port is named <port>-<protocol>, e.g. 80-tcp
    #[arg(long = "port", required = true)]
    pub ports: Vec<String>,
    /// ask for this ClusterIP instead of a free one
    #[arg(long)]
    pub cluster_ip: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// manifest file or directory, or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// also the manifests in the subdirectories of a directory given with -f
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// a kind (pods|po, deploy, rs, ns, cm, secret, events, svc, ep, no), KIND/NAME,
    /// several kinds (pods,svc), or all
    pub resource: String,
    pub names: Vec<String>,
    /// label selector: a=b,c!=d,e in (f,g),!h
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// field selector: metadata.name=x,status.phase!=Running (the fields Kubernetes
    /// supports for the kind)
    #[arg(long)]
    pub field_selector: Option<String>,
    /// output format
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
    /// after listing, print every change until interrupted
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// list across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// a kind (pod, deploy, rs, ns, cm, …) or KIND/NAME
    pub resource: String,
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// a kind (pod, deploy, ns, …) or KIND/NAME
    #[arg(default_value = "")]
    pub resource: String,
    pub names: Vec<String>,
    /// delete the objects of these manifests (files or directories) instead
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// with -f DIR: also its subdirectories
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// background (default), foreground or orphan (false = orphan, true = background)
    #[arg(long, default_value = "background")]
    pub cascade: String,
    /// seconds a pod gets to stop (default: the pod's terminationGracePeriodSeconds)
    #[arg(long, allow_negative_numbers = true)]
    pub grace_period: Option<i64>,
    /// delete at once (grace period 0), without waiting for the node to stop the pod
    #[arg(long)]
    pub force: bool,
    /// wait until the objects are gone (--wait=false to return at once)
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// give up waiting after this many seconds (default: wait until gone)
    #[arg(long)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub pod: String,
    /// container (default: the pod's first)
    #[arg(short = 'c', long, default_value = "")]
    pub container: String,
    /// stream new output until interrupted
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// only the last N lines (-1: all; 0: none, which needs no -f)
    #[arg(long, allow_negative_numbers = true)]
    pub tail: Option<i64>,
    /// logs of the previous instance of a restarted container
    #[arg(short = 'p', long)]
    pub previous: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub pod: String,
    /// container (default: the pod's first)
    #[arg(short = 'c', long, default_value = "")]
    pub container: String,
    /// pass stdin to the command
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// allocate a terminal (when stdin is one)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// the command and its arguments, after `--`
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}
