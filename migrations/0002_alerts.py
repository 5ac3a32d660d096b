from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from backend.models.alert import AlertResolution, AlertRuleKind, AlertSeverity, AlertState
from backend.models.notification import ChannelKind, DeliveryKind, DeliveryStatus
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AlertRule',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=255)),
                ('kind', fields.CharEnumField(description='EXPIRY: EXPIRY\nSOURCE_FAILING: SOURCE_FAILING\nHOST_STALE: HOST_STALE', enum_type=AlertRuleKind, max_length=16)),
                ('threshold_days', fields.IntField(null=True)),
                ('failing_for_hours', fields.IntField(null=True)),
                ('severity', fields.CharEnumField(description='INFO: INFO\nWARNING: WARNING\nCRITICAL: CRITICAL', enum_type=AlertSeverity, max_length=16)),
                ('filter_host', fields.ForeignKeyField('models.Host', source_field='filter_host_id', null=True, db_constraint=True, to_field='id', related_name='alert_rules', on_delete=OnDelete.SET_NULL)),
                ('filter_search', fields.CharField(null=True, max_length=256)),
                ('filter_source', fields.CharField(null=True, max_length=16)),
                ('include_ca', fields.BooleanField(default=False)),
                ('enabled', fields.BooleanField(default=True)),
                ('default_key', fields.CharField(null=True, unique=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('deleted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'alert_rule', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Alert',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('rule', fields.ForeignKeyField('models.AlertRule', source_field='rule_id', db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(description='EXPIRY: EXPIRY\nSOURCE_FAILING: SOURCE_FAILING\nHOST_STALE: HOST_STALE', enum_type=AlertRuleKind, max_length=16)),
                ('certificate', fields.ForeignKeyField('models.Certificate', source_field='certificate_id', null=True, db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('tracked_source', fields.ForeignKeyField('models.TrackedSource', source_field='tracked_source_id', null=True, db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('host', fields.ForeignKeyField('models.Host', source_field='host_id', null=True, db_constraint=True, to_field='id', related_name='alerts', on_delete=OnDelete.CASCADE)),
                ('state', fields.CharEnumField(description='FIRING: FIRING\nACKNOWLEDGED: ACKNOWLEDGED\nRESOLVED: RESOLVED', enum_type=AlertState, max_length=16)),
                ('severity', fields.CharEnumField(description='INFO: INFO\nWARNING: WARNING\nCRITICAL: CRITICAL', enum_type=AlertSeverity, max_length=16)),
                ('fired_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('acknowledged_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('acknowledged_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('acknowledged_by', fields.CharField(null=True, max_length=255)),
                ('resolved_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('resolution', fields.CharEnumField(null=True, description='RENEWED: RENEWED\nREMOVED: REMOVED\nUNTRACKED: UNTRACKED\nRULE_DELETED: RULE_DELETED\nNO_LONGER_MATCHES: NO_LONGER_MATCHES\nRECOVERED: RECOVERED', enum_type=AlertResolution, max_length=24)),
                ('open_key', fields.CharField(null=True, unique=True, max_length=160)),
            ],
            options={'table': 'alert', 'app': 'models', 'indexes': [Index(fields=['certificate_id', 'state'], name='alert_certificate'), Index(fields=['host_id', 'state'], name='alert_host'), Index(fields=['tracked_source_id', 'state'], name='alert_source'), Index(fields=['state', 'acknowledged_until'], name='alert_state')], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='NotificationChannel',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=255)),
                ('kind', fields.CharEnumField(description='WEBHOOK: WEBHOOK\nSLACK: SLACK\nEMAIL: EMAIL', enum_type=ChannelKind, max_length=16)),
                ('enabled', fields.BooleanField(default=True)),
                ('config', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('secret_encrypted', fields.TextField(null=True, unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('last_delivery_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('deleted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notification_channel', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AlertRuleChannel',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('rule', fields.ForeignKeyField('models.AlertRule', source_field='rule_id', db_constraint=True, to_field='id', related_name='channel_links', on_delete=OnDelete.CASCADE)),
                ('channel', fields.ForeignKeyField('models.NotificationChannel', source_field='channel_id', db_constraint=True, to_field='id', related_name='rule_links', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'alert_rule_channel', 'app': 'models', 'unique_together': (('rule_id', 'channel_id'),), 'pk_attr': 'id', 'table_description': 'Which channels a rule notifies.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='NotificationDelivery',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.NotificationChannel', source_field='channel_id', db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('alert', fields.ForeignKeyField('models.Alert', source_field='alert_id', null=True, db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(description='FIRED: FIRED\nRESOLVED: RESOLVED\nACKNOWLEDGED: ACKNOWLEDGED\nTEST: TEST', enum_type=DeliveryKind, max_length=16)),
                ('attempt', fields.IntField(default=1)),
                ('first_attempt_id', fields.IntField(null=True)),
                ('status', fields.CharEnumField(description='PENDING: PENDING\nSENT: SENT\nFAILED: FAILED', enum_type=DeliveryStatus, max_length=16)),
                ('response_code', fields.IntField(null=True)),
                ('error', fields.TextField(null=True, unique=False)),
                ('payload', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('next_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notification_delivery', 'app': 'models', 'indexes': [Index(fields=['status', 'next_attempt_at'], name='delivery_due'), Index(fields=['alert_id', 'id'], name='delivery_alert'), Index(fields=['channel_id', 'id'], name='delivery_channel')], 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
