from django.db import models


class Order(models.Model):
    customer = models.TextField()
    amount = models.IntegerField()
    status = models.TextField(default="new")

    class Meta:
        db_table = "orders"


class AuditEntry(models.Model):
    change_id = models.BigIntegerField(unique=True)
    op = models.TextField()
    order_id = models.IntegerField(null=True)

    class Meta:
        db_table = "audit_log"
