// kubelet-sim: the one fake of the cluster suite. There is no container runtime here, so this
// program stands in for the kubelets of a one-node cluster:
//
//   - it registers the Node (schedulable, Ready, with room for many pods) and renews its Lease;
//   - every pod the scheduler binds to the node is marked Running and Ready, its containers
//     running (no process starts; probes are not run), with an address of its own in 10/8
//     (nothing listens there; the EndpointSlices of Services list it, as a cluster DNS would);
//   - a pod being deleted is removed at once, as a kubelet does once its containers stop;
//   - every unbound PersistentVolumeClaim gets a PersistentVolume made for it, which the
//     controller-manager's volume controller then binds (a stand-in for a dynamic provisioner);
//   - every LoadBalancer Service gets an ingress host name in its status (a stand-in for the
//     cloud's load balancer controller; nothing listens there).
//
// Usage: kubelet-sim --kubeconfig FILE [--node NAME]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	node := flag.String("node", "sim-node", "name of the simulated node")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig %s: %v", *kubeconfig, err)
	}
	config.QPS = 200
	config.Burst = 400
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		log.Fatalf("client: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sim := &simulator{client: client, node: *node}
	if err := sim.register(ctx); err != nil {
		log.Fatalf("register node %s: %v", *node, err)
	}
	go sim.heartbeat(ctx)

	pods := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", *node).String()
		}))
	pods.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { sim.pod(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { sim.pod(ctx, obj.(*corev1.Pod)) },
	})
	claims := informers.NewSharedInformerFactory(client, 30*time.Second)
	claims.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { sim.claim(ctx, obj.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, obj any) { sim.claim(ctx, obj.(*corev1.PersistentVolumeClaim)) },
	})
	claims.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { sim.loadBalancer(ctx, obj.(*corev1.Service)) },
		UpdateFunc: func(_, obj any) { sim.loadBalancer(ctx, obj.(*corev1.Service)) },
	})
	pods.Start(ctx.Done())
	claims.Start(ctx.Done())
	log.Printf("kubelet-sim: node %s ready", *node)
	<-ctx.Done()
}

type simulator struct {
	client kubernetes.Interface
	node   string
	// The last pod address handed out (10.0.0.0/8, counted up).
	lastIP atomic.Uint32
}

// podIP is a fresh address in 10/8 for a pod.
func (s *simulator) podIP() string {
	n := s.lastIP.Add(1)
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&0xff, (n>>8)&0xff, n&0xff)
}

func (s *simulator) register(ctx context.Context) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   s.node,
			Labels: map[string]string{"kubernetes.io/hostname": s.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kubelet-sim"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := s.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return s.nodeStatus(ctx, capacity)
}

func (s *simulator) nodeStatus(ctx context.Context, capacity corev1.ResourceList) error {
	node, err := s.client.CoreV1().Nodes().Get(ctx, s.node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	if capacity != nil {
		node.Status.Capacity = capacity
		node.Status.Allocatable = capacity
	}
	node.Status.Phase = corev1.NodeRunning
	node.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet-sim", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
	}
	node.Status.NodeInfo.KubeletVersion = "kubelet-sim"
	_, err = s.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node's Lease and status, as a kubelet does, so the node stays Ready.
func (s *simulator) heartbeat(ctx context.Context) {
	leases := s.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
	for i := 0; ; i++ {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, s.node, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: s.node},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(s.node),
					LeaseDurationSeconds: ptr.To[int32](40),
					RenewTime:            &now,
				},
			}, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			log.Printf("kubelet-sim: node lease: %v", err)
		}
		if i%4 == 3 {
			if err := s.nodeStatus(ctx, nil); err != nil && ctx.Err() == nil {
				log.Printf("kubelet-sim: node status: %v", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (s *simulator) pod(ctx context.Context, pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil {
		err := s.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			log.Printf("kubelet-sim: delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		return
	}
	if pod.Status.Phase == corev1.PodRunning && podReady(pod) {
		return
	}
	now := metav1.Now()
	updated := pod.DeepCopy()
	updated.Status.Phase = corev1.PodRunning
	updated.Status.HostIP = "127.0.0.1"
	updated.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	if updated.Status.PodIP == "" {
		ip := s.podIP()
		updated.Status.PodIP = ip
		updated.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	updated.Status.StartTime = &now
	updated.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	updated.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		updated.Status.ContainerStatuses = append(updated.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:         c.Name,
			Image:        c.Image,
			ImageID:      "sim://" + c.Image,
			ContainerID:  fmt.Sprintf("sim://%s/%s", pod.UID, c.Name),
			Ready:        true,
			Started:      ptr.To(true),
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			RestartCount: 0,
		})
	}
	_, err := s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Printf("kubelet-sim: pod %s/%s status: %v", pod.Namespace, pod.Name, err)
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// claim makes a volume for an unbound claim; the volume controller binds the two.
func (s *simulator) claim(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.DeletionTimestamp != nil {
		return
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-" + string(pvc.UID)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              ptr.Deref(pvc.Spec.StorageClassName, ""),
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/kubelet-sim/" + string(pvc.UID)},
			},
		},
	}
	if _, err := s.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		log.Printf("kubelet-sim: volume for %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
}

// loadBalancer gives a LoadBalancer Service the address a cloud would.
func (s *simulator) loadBalancer(ctx context.Context, svc *corev1.Service) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) > 0 {
		return
	}
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: svc.Name + "." + svc.Namespace + ".lb.kubelet-sim.invalid"}}
	if _, err := s.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Printf("kubelet-sim: load balancer of %s/%s: %v", svc.Namespace, svc.Name, err)
	}
}
