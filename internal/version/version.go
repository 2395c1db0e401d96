package version

const (
	// Basalt is this build's version.
	Basalt = "0.1.0"
	// Etcd is the etcd server version Basalt reports in Status and /version.
	// Kubernetes enables consistent reads and progress notifications from
	// 3.6 on; Basalt serves the 3.6 API.
	Etcd = "3.6.0"
	// EtcdCluster is the cluster version reported in /version.
	EtcdCluster = "3.6.0"
	// Storage is the storage version reported in Status.
	Storage = "3.6.0"
)
