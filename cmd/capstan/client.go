package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
)

// defaultMongoURI is where `capstan run` serves its embedded store.
const defaultMongoURI = "mongodb://127.0.0.1:27017/?directConnection=true"

type clientFlags struct {
	mongoURI      string
	database      string
	namespace     string
	allNamespaces bool
	clusterScoped bool
	timeout       time.Duration
}

func (f *clientFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.mongoURI, "mongo-uri", defaultMongoURI, "MongoDB connection string of the store (default: a local `capstan run`)")
	fl.StringVar(&f.database, "database", "capstan", "database holding the resources")
	fl.StringVarP(&f.namespace, "namespace", "n", "default", "namespace")
	fl.BoolVar(&f.clusterScoped, "cluster-scoped", false, "treat kinds this command does not know as cluster-scoped")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "time limit of the whole command (watch: of connecting)")
}

// client is an unstructured view of a store: kinds it does not know are
// registered on first use with their default collection.
type client struct {
	st     store.Store
	scheme *store.Scheme
	flags  *clientFlags
}

func (f *clientFlags) connect(ctx context.Context) (*client, error) {
	scheme := store.NewScheme()
	for _, k := range builtinScheme().Kinds() {
		var opts []store.KindOption
		opts = append(opts, store.WithCollection(k.Collection))
		if !k.Namespaced {
			opts = append(opts, store.ClusterScoped())
		}
		if _, err := scheme.RegisterUnstructured(k.Name, opts...); err != nil {
			return nil, err
		}
	}
	st, err := mongostore.Open(ctx, f.mongoURI, scheme, mongostore.Options{Database: f.database})
	if err != nil {
		return nil, err
	}
	return &client{st: st, scheme: scheme, flags: f}, nil
}

// hasCollection reports whether the database has a collection named name.
func (c *client) hasCollection(name string) bool {
	ms, ok := c.st.(*mongostore.Store)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.flags.timeout)
	defer cancel()
	names, err := ms.Database().ListCollectionNames(ctx, map[string]any{"name": name})
	return err == nil && len(names) > 0
}

// connectKind connects and resolves the kind named on the command line;
// the caller closes the client.
func (f *clientFlags) connectKind(ctx context.Context, kind string) (*client, *store.Kind, error) {
	c, err := f.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	k, err := c.kind(kind)
	if err != nil {
		c.close()
		return nil, nil, err
	}
	return c, k, nil
}

func (c *client) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.st.Close(ctx)
}

// kind returns the kind named name, registering an unknown one.
func (c *client) kind(name string) (*store.Kind, error) {
	if k, err := c.scheme.Kind(name); err == nil {
		return k, nil
	}
	for _, k := range c.scheme.Kinds() {
		if strings.EqualFold(k.Name, name) || k.Collection == strings.ToLower(name) {
			return k, nil
		}
	}
	var opts []store.KindOption
	if c.flags.clusterScoped {
		opts = append(opts, store.ClusterScoped())
	}
	// Kinds are CamelCase; "widget" on the command line means "Widget".
	name = strings.ToUpper(name[:1]) + name[1:]
	// A plural that names an existing collection ("webservers") means
	// that collection.
	if lower := strings.ToLower(name); lower != store.DefaultCollection(name) && c.hasCollection(lower) {
		opts = append(opts, store.WithCollection(lower))
	}
	k, err := c.scheme.RegisterUnstructured(name, opts...)
	if errs.IsAlreadyExists(err) {
		return c.scheme.Kind(name)
	}
	return k, err
}

func newApplyCmd() *cobra.Command {
	f := &clientFlags{}
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update the objects in a YAML or JSON file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errs.Invalid("filename", "-f FILE (or - for standard input) is required")
			}
			var r io.Reader = cmd.InOrStdin()
			if file != "-" {
				fh, err := os.Open(file)
				if err != nil {
					return errs.Wrap(errs.InvalidArgument, err, "open %s", file)
				}
				defer fh.Close()
				r = fh
			}
			objs, err := meta.DecodeYAMLObjects(r)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			c, err := f.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
			for i, obj := range objs {
				res, err := c.apply(ctx, obj)
				if err != nil {
					return fmt.Errorf("object %d (%s %s): %w", i, obj.Kind, obj.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(obj.Kind), obj.Name, res)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file to apply, - for standard input")
	return cmd
}

func (c *client) apply(ctx context.Context, obj *meta.Unstructured) (string, error) {
	k, err := c.kind(obj.Kind)
	if err != nil {
		return "", err
	}
	obj.Kind = k.Name
	if k.Namespaced && obj.Namespace == "" {
		obj.Namespace = c.flags.namespace
	}
	for attempt := 0; ; attempt++ {
		cur := &meta.Unstructured{Kind: k.Name}
		err := c.st.Get(ctx, obj.Key(), cur)
		if errs.IsNotFound(err) {
			if err := c.st.Create(ctx, obj); err != nil {
				if errs.IsAlreadyExists(err) && attempt < 5 {
					continue
				}
				return "", err
			}
			return "created", nil
		}
		if err != nil {
			return "", err
		}
		desired := meta.DeepCopy(obj)
		desired.ResourceVersion = cur.ResourceVersion
		desired.UID = cur.UID
		if specAndMetaEqual(cur, desired) {
			return "unchanged", nil
		}
		if err := c.st.Update(ctx, desired); err != nil {
			if errs.IsConflict(err) && attempt < 5 {
				continue
			}
			return "", err
		}
		return "configured", nil
	}
}

// specAndMetaEqual reports whether applying desired over cur would change
// nothing Update writes: the client-owned metadata and every field but
// status.
func specAndMetaEqual(cur, desired *meta.Unstructured) bool {
	strip := func(u *meta.Unstructured) ([]byte, error) {
		c := meta.DeepCopy(u)
		delete(c.Fields, "status")
		m := c.ObjectMeta
		c.ObjectMeta = meta.ObjectMeta{Name: m.Name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations,
			OwnerReferences: m.OwnerReferences, Finalizers: m.Finalizers}
		return json.Marshal(c)
	}
	a, err1 := strip(cur)
	b, err2 := strip(desired)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

func newGetCmd() *cobra.Command {
	f := &clientFlags{}
	var output, selector string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show objects of a kind",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			c, k, err := f.connectKind(ctx, args[0])
			if err != nil {
				return err
			}
			defer c.close()
			var items []meta.Object
			if len(args) == 2 {
				obj := &meta.Unstructured{Kind: k.Name}
				if err := c.st.Get(ctx, c.key(k, args[1]), obj); err != nil {
					return err
				}
				items = []meta.Object{obj}
			} else {
				opts := store.ListOptions{}
				if k.Namespaced && !f.allNamespaces {
					opts.Namespace = f.namespace
				}
				if selector != "" {
					sel, err := labels.Parse(selector)
					if err != nil {
						return errs.Invalid("selector", "%v", err)
					}
					opts.Selector = sel
				}
				res, err := c.st.List(ctx, k.Name, opts)
				if err != nil {
					return err
				}
				items = res.Items
			}
			return printObjects(cmd.OutOrStdout(), output, items, len(args) == 2)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json (default: a table)")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, for example app=web")
	cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "list every namespace")
	return cmd
}

func (c *client) key(k *store.Kind, name string) meta.Key {
	if !k.Namespaced {
		return meta.Key{Name: name}
	}
	return meta.Key{Namespace: c.flags.namespace, Name: name}
}

func checkOutput(o string) error {
	switch o {
	case "", "yaml", "json", "wide":
		return nil
	}
	return errs.Invalid("output", "unknown output format %q: want yaml or json", o)
}

func printObjects(w io.Writer, output string, items []meta.Object, single bool) error {
	switch output {
	case "json":
		var v any = items
		if single {
			v = items[0]
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		for i, it := range items {
			b, err := yaml.Marshal(it)
			if err != nil {
				return err
			}
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tGENERATION\tRESOURCEVERSION\tAGE")
	sort.SliceStable(items, func(i, j int) bool { return meta.KeyOf(items[i]).String() < meta.KeyOf(items[j]).String() })
	for _, it := range items {
		m := it.GetObjectMeta()
		ns := m.Namespace
		if ns == "" {
			ns = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", ns, m.Name, m.Generation, m.ResourceVersion, age(m.CreationTimestamp))
	}
	return tw.Flush()
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newDeleteCmd() *cobra.Command {
	f := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete an object (or mark it for deletion while it has finalizers)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			c, k, err := f.connectKind(ctx, args[0])
			if err != nil {
				return err
			}
			defer c.close()
			obj := &meta.Unstructured{Kind: k.Name}
			key := c.key(k, args[1])
			obj.Namespace, obj.Name = key.Namespace, key.Name
			if err := c.st.Delete(ctx, obj); err != nil {
				return err
			}
			state := "deleted"
			if obj.DeletionTimestamp != nil && len(obj.Finalizers) > 0 {
				state = fmt.Sprintf("marked for deletion (waiting for finalizers %s)", strings.Join(obj.Finalizers, ", "))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(k.Name), args[1], state)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newWatchCmd() *cobra.Command {
	f := &clientFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "watch KIND",
		Short: "List a kind, then print every change until interrupted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			cctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			c, k, err := f.connectKind(cctx, args[0])
			if err != nil {
				return err
			}
			defer c.close()
			ns := ""
			if k.Namespaced && !f.allNamespaces {
				ns = f.namespace
			}
			w := cmd.OutOrStdout()
			for {
				res, err := c.st.List(cctx, k.Name, store.ListOptions{Namespace: ns})
				if err != nil {
					return err
				}
				for _, it := range res.Items {
					printEvent(w, output, store.Event{Type: "Listed", Object: it})
				}
				ch, err := c.st.Watch(ctx, k.Name, store.WatchOptions{Namespace: ns, Revision: res.Revision})
				if err != nil {
					return err
				}
				expired := false
				for ev := range ch {
					switch ev.Type {
					case store.Bookmark:
						continue
					case store.Expired:
						expired = true
						continue
					case store.Error:
						return ev.Err
					}
					printEvent(w, output, ev)
				}
				if !expired || ctx.Err() != nil {
					return nil
				}
				fmt.Fprintln(os.Stderr, "capstan: watch position expired; listing again")
			}
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json (default: one line per event)")
	cmd.Flags().BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "watch every namespace")
	return cmd
}

func printEvent(w io.Writer, output string, ev store.Event) {
	m := ev.Object.GetObjectMeta()
	switch output {
	case "json":
		b, _ := json.Marshal(map[string]any{"type": ev.Type, "object": ev.Object})
		fmt.Fprintln(w, string(b))
	case "yaml":
		b, _ := yaml.Marshal(map[string]any{"type": ev.Type, "object": ev.Object})
		fmt.Fprintf(w, "---\n%s", b)
	default:
		if ev.Type == store.Deleted {
			fmt.Fprintf(w, "%-9s %s\n", ev.Type, m.Key())
			return
		}
		fmt.Fprintf(w, "%-9s %s resourceVersion=%s generation=%d\n", ev.Type, m.Key(), m.ResourceVersion, m.Generation)
	}
}
