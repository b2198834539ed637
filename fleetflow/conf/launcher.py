"""[launcher] options."""

from oslo_config import cfg

launcher_group = cfg.OptGroup('launcher', title='Launcher options',
                              help='How the launcher serves node requests.')

launcher_opts = [
    cfg.StrOpt('layout_file',
               default='/etc/fleetflow/layout.yaml',
               help='YAML file of labels, providers and pools, in '
                    'nodepool\'s shape.'),
    cfg.StrOpt('role', default='both',
               choices=[('launcher', 'serve requests and post flows'),
                        ('conductor', 'only run flows from the jobboard'),
                        ('both', 'serve requests and run flows')],
               help='What this launcher process does.'),
    cfg.IntOpt('workers', default=16, min=1, max=4096,
               help='Flows run at once by this process (the size of its '
                    'bounded worker pool). A flow that waits for its '
                    'instance or for SSH is parked and holds no worker.'),
    cfg.IntOpt('flow_processes', default=0, min=0, max=64,
               help='Processes that run the flows of a launcher without '
                    'a jobboard, each with its own workers: 0 is one per '
                    'CPU this launcher may use (4 at most), 1 runs them in '
                    'the launcher\'s own process. Waiting flows are '
                    'parked in the launcher, on its one listing per '
                    'provider, whichever process runs them.'),
    cfg.FloatOpt('request_interval', default=5.0, min=0.05, max=600,
                 help='Longest time between two passes over requests; a '
                      'new request or a finished flow wakes the launcher '
                      'at once.'),
    cfg.FloatOpt('cleanup_interval', default=60.0, min=0.1, max=86400,
                 help='Seconds between passes that look for leaked '
                      'instances and resources.'),
    cfg.FloatOpt('instance_refresh_interval', default=1.0, min=0.01,
                 max=600,
                 help='Longest time between two listings of a '
                      'provider\'s instances while a node waits for one, '
                      'once the provider\'s change times are learnt; one '
                      'listing serves every waiting node. Listings come '
                      'sooner when a waiting instance could have changed '
                      '(learnt from the changes seen lately), with at most '
                      '10 more listings than one per this interval over '
                      'any stretch of time. Before a first change is seen, '
                      'the time between listings that show no change grows '
                      'past it, to a quarter of the time since one last '
                      'did.'),
    cfg.FloatOpt('instance_list_floor', default=0.1, min=0.01, max=600,
                 help='Shortest time between two listings of a '
                      'provider\'s instances (at most '
                      'instance_refresh_interval).'),
    cfg.FloatOpt('poll_attempt', default=30.0, min=0.01, max=600,
                 help='Longest a waiting flow stays parked before it looks '
                      'again and checks its deadline; a change of its '
                      'instance in the provider\'s listing wakes it '
                      'sooner.'),
    cfg.IntOpt('delete_timeout', default=600, min=1, max=86400,
               help='Seconds to wait for a deleted instance to disappear.'),
    cfg.FloatOpt('delete_retry_interval', default=30.0, min=0.1, max=86400,
                 help='The longest wait, in seconds, before a node whose '
                      'delete keeps failing is deleted again.'),
    cfg.FloatOpt('delete_retry_initial', default=1.0, min=0.1, max=86400,
                 help='Seconds before a node whose delete failed is '
                      'deleted again the first time; the wait doubles '
                      'with each failure, up to delete_retry_interval.'),
    cfg.FloatOpt('quota_cache_ttl', default=300.0, min=0, max=86400,
                 help='Seconds the quota a label needs and the provider '
                      'limits are cached.'),
    cfg.FloatOpt('aborted_request_delay', default=5.0, min=0, max=3600,
                 help='Seconds before a request whose node was aborted '
                      '(the cloud refused it for quota or capacity) is '
                      'served again.'),
    cfg.IntOpt('max_launches_per_pass', default=200, min=1, max=100000,
               help='New launches one pass starts at most (for requests '
                    'and min-ready); once reached, the pass serves no '
                    'further request (one request is served whole) and '
                    'the next pass follows at once.'),
]


def register_opts(conf):
    conf.register_group(launcher_group)
    conf.register_opts(launcher_opts, group=launcher_group)


def list_opts():
    return {launcher_group: launcher_opts}
